#!/usr/bin/env node
// Read captchas from the command line with the JavaScript reader, one JSON line per image:
//   node js/read.mjs runs/latest a.png b.jpg --allowed-chars 0123456789

import { parseArgs } from 'node:util';

import { allowedMask, CaptchaOCRError, loadReader } from './node-reader.mjs';

const HELP = `usage: node read.mjs MODEL IMAGE... [--allowed-chars CHARS] [--threads N]

Read captchas with a captcha-ocr model (a run folder or an .onnx file), exactly as
"captcha-ocr predict --json" does with greedy decoding: one JSON line per image,
{"path": ..., "text": ..., "confidence": ...}, with "error" set for an unreadable image
(exit status 1 if any was).

  --allowed-chars CHARS  read only these characters (the output is renormalised over them)
  --threads N            ONNX Runtime threads (default: its own choice)
  -h, --help             show this help`;

async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'allowed-chars': { type: 'string' },
        threads: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    console.error(`error: ${error.message}\n\n${HELP}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length < 2) {
    console.error(`error: give a model and at least one image\n\n${HELP}`);
    return 2;
  }
  const threads = values.threads === undefined ? undefined : Number(values.threads);
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) {
    console.error(`error: --threads must be a whole number >= 1, got ${values.threads}`);
    return 2;
  }
  const [model, ...images] = positionals;
  let failed = 0;
  try {
    const reader = await loadReader(model, { threads });
    if (reader.notUsable) console.error(`warning: ${model} is marked not usable: ${reader.notUsable}`);
    allowedMask(reader.chars, values['allowed-chars']); // a bad --allowed-chars fails once, here
    for (const image of images) {
      try {
        const { text, confidence } = await reader.read(image, { allowedChars: values['allowed-chars'] });
        console.log(JSON.stringify({ path: image, text, confidence: Number(confidence.toFixed(6)) }));
      } catch (error) {
        if (!(error instanceof CaptchaOCRError)) throw error;
        failed += 1;
        console.error(`skipped ${error.message}`);
        console.log(JSON.stringify({ path: image, text: null, confidence: 0, error: error.message }));
      }
    }
  } catch (error) {
    if (!(error instanceof CaptchaOCRError)) throw error;
    console.error(`error: ${error.message}`);
    return 2;
  }
  return failed ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
