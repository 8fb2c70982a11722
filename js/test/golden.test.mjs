// The JS reader against the Python reader's golden outputs (js/golden/, made by
// js/make_golden.py): the same model input to the bit, the same texts, and confidences and
// per-step probabilities within 1e-4. Run: node --test js/test/

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { CaptchaOCRError, decodeImage, loadImage, loadReader, readOnnxMetadata, specFromMetadata } from '../node-reader.mjs';

const GOLDEN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'golden');
const golden = JSON.parse(await readFile(path.join(GOLDEN, 'golden.json'), 'utf8'));
const TOLERANCE = 1e-4;

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

const readers = {};
async function reader(model) {
  readers[model] ??= await loadReader(path.join(GOLDEN, model), { threads: 1 });
  return readers[model];
}

/** Relative closeness for confidences, which are products of many probabilities. */
function assertClose(actual, expected, what) {
  const scale = Math.max(Math.abs(expected), 1e-30);
  assert.ok(Math.abs(actual - expected) <= TOLERANCE * scale || Math.abs(actual - expected) <= 1e-12,
    `${what}: ${actual} != ${expected}`);
}

for (const entry of golden.reads) {
  test(`${entry.model} reads ${entry.image} as Python does`, async () => {
    const r = await reader(entry.model);
    const pixels = await r.preprocess(path.join(GOLDEN, entry.image));
    assert.equal(sha256(pixels), entry.pixels_sha256, 'the model input differs from Python\'s');

    const logProbs = await r.logProbs([pixels]);
    let worst = 0;
    entry.probs.forEach((step, t) => step.forEach((p, c) => {
      worst = Math.max(worst, Math.abs(Math.exp(logProbs.data[t * logProbs.classes + c]) - p));
    }));
    assert.ok(worst <= TOLERANCE, `per-step probabilities differ by ${worst}`);

    const [plain] = r.decode(logProbs);
    assert.equal(plain.text, entry.text);
    assertClose(plain.confidence, entry.confidence, 'confidence');
    const [allowed] = r.decode(logProbs, { allowedChars: entry.allowed_chars });
    assert.equal(allowed.text, entry.allowed_text);
    assertClose(allowed.confidence, entry.allowed_confidence, 'confidence with allowedChars');

    const read = await r.read(path.join(GOLDEN, entry.image));  // the one-call path agrees
    assert.equal(read.text, entry.text);
  });
}

test('resizing to many sizes gives Pillow\'s pixels exactly', async () => {
  for (const entry of golden.resizes) {
    const image = await decodeImage(path.join(GOLDEN, entry.image));
    const pixels = loadImage(image, entry.height, entry.width, entry.channels);
    const expected = Buffer.from(entry.pixels, 'base64');
    const what = `${entry.image} to ${entry.width}x${entry.height}x${entry.channels}`;
    assert.equal(pixels.length, expected.length, what);
    const wrong = pixels.findIndex((v, i) => v !== expected[i]);
    assert.equal(wrong, -1, `${what}: pixel ${wrong} is ${pixels[wrong]}, Python has ${expected[wrong]}`);
  }
});

test('every alpha over every level composites on white as Pillow does', () => {
  // The same table as make_golden.alpha_table: row = alpha, column = level.
  const data = new Uint8Array(256 * 256 * 4);
  for (let a = 0; a < 256; a++) {
    for (let v = 0; v < 256; v++) {
      data.set([v, 255 - v, (v * 37) % 256, a], (a * 256 + v) * 4);
    }
  }
  for (const channels of [1, 3]) {
    const pixels = loadImage({ width: 256, height: 256, data }, 256, 256, channels);
    assert.equal(sha256(pixels), golden.alpha_table[String(channels)], `channels ${channels}`);
  }
});

test('every RGB colour turns grey as Pillow\'s convert("L") does', () => {
  const data = new Uint8Array((1 << 24) * 3);
  for (let code = 0; code < 1 << 24; code++) {
    data[code * 3] = code >> 16;
    data[code * 3 + 1] = (code >> 8) & 255;
    data[code * 3 + 2] = code & 255;
  }
  const pixels = loadImage({ width: 4096, height: 4096, data, channels: 3 }, 4096, 4096, 1);
  assert.equal(sha256(pixels), golden.all_colours_to_grey);
});

test('a batch reads as its images one by one', async () => {
  const entries = golden.reads.filter((e) => e.model === 'rgb.onnx').slice(0, 5);
  const r = await reader('rgb.onnx');
  const batch = await r.readBatch(entries.map((e) => path.join(GOLDEN, e.image)));
  assert.deepEqual(batch.map((p) => p.text), entries.map((e) => e.text));
});

test('bad input gets a clear error', async () => {
  const r = await reader('tiny.onnx');
  await assert.rejects(r.read(path.join(GOLDEN, 'no-such.png')), /no such file/);
  await assert.rejects(r.read(Buffer.from('not an image')), CaptchaOCRError);
  await assert.rejects(r.read({ width: 2, height: 2, data: new Uint8Array(3) }), /needs 4 x 1, 2, 3 or 4 bytes/);
  assert.throws(() => r.decode({ data: new Float32Array(9), batch: 1, steps: 1, classes: 9 }, { allowedChars: 'z' }),
    /cannot output: "z"/);
  await assert.rejects(loadReader(path.join(GOLDEN, 'images')), /has no model.onnx/);
  await assert.rejects(loadReader(path.join(GOLDEN, 'images', 'l.jpg')), /no captcha-ocr metadata|not an ONNX model/);
});

test('read.mjs prints what captcha-ocr predict --json prints', () => {
  const entries = golden.reads.filter((e) => e.model === 'tiny.onnx').slice(0, 4);
  const images = entries.map((e) => path.join(GOLDEN, e.image));
  const cli = path.join(GOLDEN, '..', 'read.mjs');
  const run = spawnSync(process.execPath, [cli, path.join(GOLDEN, 'tiny.onnx'), ...images, 'missing.png'], { encoding: 'utf8' });
  assert.equal(run.status, 1, run.stderr); // one unreadable image
  const lines = run.stdout.trim().split('\n').map((line) => JSON.parse(line));
  assert.deepEqual(lines.slice(0, -1).map((l) => l.text), entries.map((e) => e.text));
  lines.slice(0, -1).forEach((l, i) => assert.ok(Math.abs(l.confidence - entries[i].confidence) < 1e-4));
  assert.match(lines.at(-1).error, /missing.png: no such file/);
  const bad = spawnSync(process.execPath, [cli, path.join(GOLDEN, 'tiny.onnx'), images[0], '--allowed-chars', 'z'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /cannot output: "z"/);
});

test('the metadata is read from the file and checked as Python checks it', async () => {
  const metadata = readOnnxMetadata(await readFile(path.join(GOLDEN, 'rgb.onnx')));
  assert.equal(metadata.charset, 'AB7xyzΩ€😀');
  const spec = specFromMetadata(metadata);
  assert.deepEqual([spec.height, spec.width, spec.channels, spec.chars.length], [40, 120, 3, 9]);
  const good = JSON.parse(metadata.captcha_ocr);
  const bad = (change) => ({ captcha_ocr: JSON.stringify({ ...good, ...change }) });
  assert.throws(() => specFromMetadata({}), /has no captcha-ocr metadata/);
  assert.throws(() => specFromMetadata({ captcha_ocr: '{' }), /not valid JSON/);
  assert.throws(() => specFromMetadata(bad({ blank_index: 3 })), /blank_index must be 0/);
  assert.throws(() => specFromMetadata(bad({ channels: 2 })), /channels must be 1 or 3/);
  assert.throws(() => specFromMetadata(bad({ charset: 'aa' })), /repeats a character/);
  assert.throws(() => specFromMetadata(bad({ height: 0 })), /height and width/);
  assert.throws(() => specFromMetadata(bad({ min_label_length: 99 })), /min_label_length must be between/);
  assert.equal(specFromMetadata(bad({ min_label_length: undefined })).min_label_length, 0); // older models
});
