// Read captchas with a captcha-ocr ONNX model, in the browser (onnxruntime-web) or under
// Node (onnxruntime-node): the same preprocessing and CTC decoding as the Python Reader
// (src/captcha_ocr/infer.py, images.py, decode.py), driven by the model's own metadata.
//
// No packages and no build step (this file and images.mjs): pass in the ONNX Runtime you use.
//
//   import * as ort from 'onnxruntime-web';
//   import { CaptchaReader } from './captcha-reader.mjs';
//   const reader = await CaptchaReader.create(ort, await (await fetch('model.onnx')).arrayBuffer());
//   const { text, confidence } = await reader.read(file);   // a File from an <input type="file">
//
// Images are pixels ({ width, height, data, channels? }, see images.mjs) or, in the browser, a
// Blob, <img>, ImageBitmap or canvas. Each step names the Python code it matches, bit for bit;
// docs/READERS.md explains them.

import { CaptchaOCRError, imageFromBlob, loadImage } from './images.mjs';

export * from './images.mjs';

export const METADATA_KEY = 'captcha_ocr'; // JSON of the ModelSpec (captcha_ocr/metadata.py)
export const NOT_USABLE_KEY = 'not_usable'; // present when training judged the model not usable
export const BLANK = 0; // the CTC blank is class 0; charset[i] is class i + 1 (charset.py)
const EXPORT_AGAIN = 'export the model again with: captcha-ocr export RUN_DIR';

// --- the ONNX file's metadata ---------------------------------------------------------------
// ONNX Runtime's JavaScript API does not expose a model's metadata_props, so they are read
// from the file: ModelProto field 14 holds StringStringEntryProto messages (key 1, value 2).

function readVarint(bytes, state) {
  let value = 0;
  let scale = 1;
  for (;;) {
    if (state.pos >= bytes.length) throw new CaptchaOCRError('truncated protobuf varint');
    const byte = bytes[state.pos++];
    value += (byte & 0x7f) * scale; // multiplication: varints reach 64 bits, shifts only 32
    if (byte < 0x80) return value;
    scale *= 128;
  }
}

function* protoFields(bytes, start = 0, end = bytes.length) {
  const state = { pos: start };
  while (state.pos < end) {
    const tag = readVarint(bytes, state);
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) {
      yield { field, value: readVarint(bytes, state) };
    } else if (wire === 2) {
      const length = readVarint(bytes, state);
      const from = state.pos;
      state.pos += length;
      if (state.pos > end) throw new CaptchaOCRError('truncated protobuf field');
      yield { field, start: from, end: state.pos };
    } else if (wire === 1 || wire === 5) {
      state.pos += wire === 1 ? 8 : 4;
    } else {
      throw new CaptchaOCRError(`unsupported protobuf wire type ${wire}`);
    }
  }
}

/** The metadata_props of an ONNX file (its bytes) as a plain { key: value } object. */
export function readOnnxMetadata(modelBytes) {
  const bytes = toBytes(modelBytes);
  const utf8 = new TextDecoder('utf-8');
  const metadata = {};
  try {
    for (const entry of protoFields(bytes)) {
      if (entry.field !== 14 || entry.start === undefined) continue;
      let key = '';
      let value = '';
      for (const part of protoFields(bytes, entry.start, entry.end)) {
        if (part.start === undefined) continue;
        const text = utf8.decode(bytes.subarray(part.start, part.end));
        if (part.field === 1) key = text;
        if (part.field === 2) value = text;
      }
      metadata[key] = value;
    }
  } catch (error) {
    throw new CaptchaOCRError(`not an ONNX model file (${error.message})`);
  }
  return metadata;
}

/** The checked ModelSpec in `metadata` (captcha_ocr.metadata.spec_from_metadata). */
export function specFromMetadata(metadata, source = 'the model') {
  if (!(METADATA_KEY in metadata)) {
    throw new CaptchaOCRError(
      `${source} has no captcha-ocr metadata; export it with: captcha-ocr export RUN_DIR`,
    );
  }
  let spec;
  try {
    spec = JSON.parse(metadata[METADATA_KEY]);
  } catch {
    throw new CaptchaOCRError(`${source}: captcha-ocr metadata is not valid JSON; ${EXPORT_AGAIN}`);
  }
  const isInt = (v) => Number.isInteger(v);
  const chars = typeof spec?.charset === 'string' ? Array.from(spec.charset) : [];
  const checks = [
    [chars.length > 0, 'the charset is empty'],
    [new Set(chars).size === chars.length, 'the charset repeats a character'],
    [spec?.channels === 1 || spec?.channels === 3, 'channels must be 1 or 3'],
    [isInt(spec?.height) && isInt(spec?.width) && spec.height >= 1 && spec.width >= 1,
      'height and width must be integers >= 1'],
    [isInt(spec?.max_label_length) && spec.max_label_length >= 1, 'max_label_length must be >= 1'],
    [isInt(spec?.min_label_length ?? 0) && (spec?.min_label_length ?? 0) >= 0 &&
      (spec?.min_label_length ?? 0) <= spec?.max_label_length,
      'min_label_length must be between 0 and max_label_length'],
    [(spec?.blank_index ?? 0) === BLANK, 'blank_index must be 0'],
  ];
  for (const [ok, message] of checks) {
    if (!ok) throw new CaptchaOCRError(`${source}: bad captcha-ocr metadata (${message}); ${EXPORT_AGAIN}`);
  }
  return { ...spec, blank_index: spec.blank_index ?? 0, min_label_length: spec.min_label_length ?? 0, chars };
}

// --- CTC decoding (captcha_ocr.decode) -------------------------------------------------------

/** Classes allowed when the text may use only `allowedChars` (the blank always is). */
export function allowedMask(chars, allowedChars) {
  if (allowedChars === undefined || allowedChars === null) return null;
  const index = new Map(chars.map((c, i) => [c, i + 1]));
  const missing = [...new Set(Array.from(allowedChars).filter((c) => !index.has(c)))];
  if (missing.length) {
    throw new CaptchaOCRError(
      `the allowed characters include some the model cannot output: ${JSON.stringify(missing.join(''))} ` +
        `(charset ${JSON.stringify(chars.join(''))})`,
    );
  }
  const mask = new Array(chars.length + 1).fill(false);
  mask[BLANK] = true;
  for (const c of allowedChars) mask[index.get(c)] = true;
  return mask;
}

/** Log-probabilities (steps x classes, one sequence) renormalised over the allowed classes. */
export function restrict(logProbs, steps, classes, mask) {
  if (!mask) return logProbs;
  const out = new Float64Array(steps * classes);
  for (let t = 0; t < steps; t++) {
    const row = t * classes;
    let peak = -Infinity;
    for (let c = 0; c < classes; c++) if (mask[c] && logProbs[row + c] > peak) peak = logProbs[row + c];
    let sum = 0;
    for (let c = 0; c < classes; c++) if (mask[c]) sum += Math.exp(logProbs[row + c] - peak);
    const norm = Math.log(sum) + peak;
    for (let c = 0; c < classes; c++) out[row + c] = mask[c] ? logProbs[row + c] - norm : -Infinity;
  }
  return out;
}

/** Best-path decoding of one sequence: the collapsed classes (repeats merged, blanks dropped)
 * and the path's probability, the product over steps of the largest class probability. */
export function greedyDecode(logProbs, steps, classes) {
  const decoded = [];
  let pathLogProb = 0;
  let previous = -1;
  for (let t = 0; t < steps; t++) {
    const row = t * classes;
    let best = 0; // the first of equal maxima, as NumPy's argmax
    for (let c = 1; c < classes; c++) if (logProbs[row + c] > logProbs[row + best]) best = c;
    pathLogProb += logProbs[row + best];
    if (best !== BLANK && best !== previous) decoded.push(best);
    previous = best;
  }
  return { classes: decoded, confidence: Math.exp(pathLogProb) };
}

/** The most probable single path of one sequence whose text has between `low` and `high`
 * classes (Viterbi), and that path's probability: what greedyDecode reads when the best path of
 * all has another length (decode.length_decode). Falls back to greedyDecode when no path of
 * those lengths is possible. */
export function lengthDecode(logProbs, steps, classes, low, high) {
  high = Math.min(high, steps);
  const states = (high + 1) * classes; // [count k][symbol s]: k classes emitted, on s now
  let score = new Float64Array(states).fill(-Infinity);
  score[BLANK] = logProbs[BLANK];
  if (high >= 1) for (let c = 1; c < classes; c++) score[classes + c] = logProbs[c];
  const cameFrom = new Int32Array(steps * states); // the symbol a step before
  for (let t = 1; t < steps; t++) {
    const row = t * classes;
    const next = new Float64Array(states);
    for (let k = 0; k <= high; k++) {
      const at = k * classes;
      // To the blank: from any symbol, the count unchanged (the first of equal maxima).
      let best = 0;
      for (let s = 1; s < classes; s++) if (score[at + s] > score[at + best]) best = s;
      next[at + BLANK] = score[at + best] + logProbs[row + BLANK];
      cameFrom[t * states + at + BLANK] = best;
      // The two best classes at count k - 1: the best other than c is one of them.
      let first = -1;
      let second = -1;
      if (k >= 1) {
        const before = at - classes;
        for (let s = 1; s < classes; s++) {
          const v = score[before + s];
          if (first < 0 || v > score[before + first]) { second = first; first = s; }
          else if (second < 0 || v > score[before + second]) second = s;
        }
      }
      for (let c = 1; c < classes; c++) {
        // Stay on c (count k), or come from count k - 1 on the blank or on another class.
        let value = score[at + c];
        let from = c;
        if (k >= 1) {
          const before = at - classes;
          const other = c === first ? second : first;
          const otherScore = other >= 1 ? score[before + other] : -Infinity;
          const blankScore = score[before + BLANK];
          const [moved, movedFrom] = blankScore >= otherScore ? [blankScore, BLANK] : [otherScore, other];
          if (moved > value) { value = moved; from = movedFrom; }
        }
        next[at + c] = value + logProbs[row + c];
        cameFrom[t * states + at + c] = from;
      }
    }
    score = next;
  }
  let end = -1;
  for (let i = Math.max(0, low) * classes; i < states; i++) if (end < 0 || score[i] > score[end]) end = i;
  if (low > high || end < 0 || !Number.isFinite(score[end])) return greedyDecode(logProbs, steps, classes);
  const pathLogProb = score[end];
  let count = Math.floor(end / classes);
  let symbol = end % classes;
  const decoded = [];
  for (let t = steps - 1; t >= 0; t--) {
    const previous = t ? cameFrom[t * states + count * classes + symbol] : BLANK;
    if (symbol !== BLANK && (t === 0 || previous !== symbol)) { decoded.push(symbol); count -= 1; }
    symbol = previous;
  }
  return { classes: decoded.reverse(), confidence: Math.exp(pathLogProb) };
}

// --- the reader ------------------------------------------------------------------------------

/** Reads captchas with an exported captcha-ocr ONNX model. */
export class CaptchaReader {
  /**
   * @param ort the onnxruntime-web or onnxruntime-node module
   * @param model the .onnx file's bytes (ArrayBuffer or Uint8Array)
   * @param options.sessionOptions passed to ort.InferenceSession.create
   * @param options.decodeImage async (source) => image, for sources that are not pixels
   */
  static async create(ort, model, { sessionOptions = {}, decodeImage = imageFromBlob, source = 'the model' } = {}) {
    const bytes = toBytes(model);
    const metadata = readOnnxMetadata(bytes);
    const spec = specFromMetadata(metadata, source);
    let session;
    try {
      session = await ort.InferenceSession.create(bytes, sessionOptions);
    } catch (error) {
      throw new CaptchaOCRError(`${source} is not a readable ONNX model: ${String(error.message ?? error).split('\n')[0]}`);
    }
    return new CaptchaReader(ort, session, spec, metadata, decodeImage, source);
  }

  constructor(ort, session, spec, metadata, decodeImage, source) {
    this.ort = ort;
    this.session = session;
    this.spec = spec; // preset, charset, height, width, channels, min/max_label_length, blank_index
    this.chars = spec.chars; // code points: charset[i] is class i + 1
    this.notUsable = metadata[NOT_USABLE_KEY] ?? ''; // why training judged it not usable
    this.decodeImage = decodeImage;
    this.inputName = session.inputNames[0];
    this.outputName = session.outputNames[0];
    // Newer ONNX Runtimes describe the input: check it against the metadata, as Python does.
    const shape = session.inputMetadata?.[0]?.shape;
    const expected = [spec.height, spec.width, spec.channels];
    if (shape && (shape.length !== 4 || shape.slice(1).some((d, i) => d !== expected[i]))) {
      throw new CaptchaOCRError(
        `${source}: the model's input [${shape}] does not match its metadata [${expected}]; ${EXPORT_AGAIN}`,
      );
    }
  }

  /** Any image (pixels, or what decodeImage takes) -> the model input, (H, W, C) 8-bit. */
  async preprocess(image) {
    const pixels = image?.data && image.width ? image : await this.decodeImage(image);
    return loadImage(pixels, this.spec.height, this.spec.width, this.spec.channels);
  }

  /** Run the model on preprocessed inputs: (B, T, classes) log-probabilities, flat. */
  async logProbs(inputs) {
    const { height, width, channels } = this.spec;
    const size = height * width * channels;
    const batch = new Float32Array(inputs.length * size);
    inputs.forEach((pixels, i) => batch.set(pixels, i * size)); // raw 0-255: scaling is in the graph
    const tensor = new this.ort.Tensor('float32', batch, [inputs.length, height, width, channels]);
    const output = (await this.session.run({ [this.inputName]: tensor }))[this.outputName];
    const [, steps, classes] = output.dims;
    if (classes !== this.chars.length + 1) {
      throw new CaptchaOCRError(
        `the model's output has ${classes} classes, its metadata ${this.chars.length + 1} (charset + blank); ${EXPORT_AGAIN}`,
      );
    }
    return { data: output.data, batch: inputs.length, steps, classes };
  }

  /** CTC-decode log-probabilities into [{ text, confidence }], one per image. */
  decode({ data, batch, steps, classes }, { allowedChars } = {}) {
    const mask = allowedMask(this.chars, allowedChars);
    const size = steps * classes;
    const predictions = [];
    for (let b = 0; b < batch; b++) {
      const row = restrict(data.subarray(b * size, (b + 1) * size), steps, classes, mask);
      // A text of a length the model was never trained on is surely wrong: the best path of
      // the trained lengths instead (decode.decode_batch).
      const { min_label_length: low, max_label_length: high } = this.spec;
      let read = greedyDecode(row, steps, classes);
      if (read.classes.length < low || read.classes.length > high) read = lengthDecode(row, steps, classes, low, high);
      const { classes: decoded, confidence } = read;
      predictions.push({ text: decoded.map((c) => this.chars[c - 1]).join(''), confidence });
    }
    return predictions;
  }

  /** Read one image: { text, confidence }. */
  async read(image, options = {}) {
    return (await this.readBatch([image], options))[0];
  }

  /** Read several images in one model call. */
  async readBatch(images, options = {}) {
    const inputs = await Promise.all(images.map((image) => this.preprocess(image)));
    return this.decode(await this.logProbs(inputs), options);
  }
}

function toBytes(model) {
  if (model instanceof Uint8Array) return model;
  if (model instanceof ArrayBuffer) return new Uint8Array(model);
  if (ArrayBuffer.isView(model)) return new Uint8Array(model.buffer, model.byteOffset, model.byteLength);
  throw new CaptchaOCRError('the model must be the .onnx file\'s bytes (an ArrayBuffer or Uint8Array)');
}
