// The golden check in a browser: onnxruntime-web runs the models and the browser's own
// decoder (createImageBitmap + canvas, through imageFromBlob) reads the images. Served from
// js/ over HTTP; tests/test_js_reader.py drives it in headless Chromium.

import * as ort from '../node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';
import { CaptchaReader } from '../captcha-reader.mjs';

ort.env.wasm.numThreads = 1; // threads need a cross-origin-isolated page
ort.env.wasm.wasmPaths = new URL('../node_modules/onnxruntime-web/dist/', import.meta.url).href;

const GOLDEN = new URL('../golden/', import.meta.url);

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Read every golden (model, image) pair; what each gave, for the caller to compare. */
export async function run() {
  const golden = await (await fetch(new URL('golden.json', GOLDEN))).json();
  const readers = {};
  const results = [];
  for (const entry of golden.reads) {
    readers[entry.model] ??= await CaptchaReader.create(
      ort, await (await fetch(new URL(entry.model, GOLDEN))).arrayBuffer(), { source: entry.model });
    const reader = readers[entry.model];
    const blob = await (await fetch(new URL(entry.image, GOLDEN))).blob();
    const pixels = await reader.preprocess(blob);
    const logProbs = await reader.logProbs([pixels]);
    let worst = 0;
    entry.probs.forEach((step, t) => step.forEach((p, c) => {
      worst = Math.max(worst, Math.abs(Math.exp(logProbs.data[t * logProbs.classes + c]) - p));
    }));
    const [plain] = reader.decode(logProbs);
    const [allowed] = reader.decode(logProbs, { allowedChars: entry.allowed_chars });
    results.push({
      model: entry.model,
      image: entry.image,
      pixels_sha256: await sha256(pixels),
      worst_prob_difference: worst,
      text: plain.text,
      confidence: plain.confidence,
      allowed_text: allowed.text,
    });
  }
  return results;
}
