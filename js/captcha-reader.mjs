// Read captchas with a captcha-ocr ONNX model, in the browser (onnxruntime-web) or under
// Node (onnxruntime-node): the same preprocessing and CTC decoding as the Python Reader
// (src/captcha_ocr/infer.py, images.py, decode.py), driven by the model's own metadata.
//
// No imports and no build step: pass in the ONNX Runtime you use.
//
//   import * as ort from 'onnxruntime-web';
//   import { CaptchaReader, imageFromBlob } from './captcha-reader.mjs';
//   const reader = await CaptchaReader.create(ort, await (await fetch('model.onnx')).arrayBuffer());
//   const { text, confidence } = await reader.read(await imageFromBlob(file));
//
// An image is { width, height, data, channels? }: 8-bit pixels, row by row; channels 1 (grey),
// 2 (grey + alpha), 3 (RGB) or 4 (RGBA; the default, so a canvas ImageData works as is).
// Each step below names the Python code it matches, bit for bit; docs/READERS.md explains them.

export const METADATA_KEY = 'captcha_ocr'; // JSON of the ModelSpec (captcha_ocr/metadata.py)
export const NOT_USABLE_KEY = 'not_usable'; // present when training judged the model not usable
export const BLANK = 0; // the CTC blank is class 0; charset[i] is class i + 1 (charset.py)
const EXPORT_AGAIN = 'export the model again with: captcha-ocr export RUN_DIR';

/** Every error this module raises: the message says what is wrong and what to do. */
export class CaptchaOCRError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CaptchaOCRError';
  }
}

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
    [(spec?.blank_index ?? 0) === BLANK, 'blank_index must be 0'],
  ];
  for (const [ok, message] of checks) {
    if (!ok) throw new CaptchaOCRError(`${source}: bad captcha-ocr metadata (${message}); ${EXPORT_AGAIN}`);
  }
  return { ...spec, blank_index: spec.blank_index ?? 0, chars };
}

// --- preprocessing: any image -> the model's (H, W, C) pixels (images.load_image) -----------

/** Check an image object and return its channel count (1 L, 2 LA, 3 RGB, 4 RGBA). */
function imageChannels(image) {
  const { width, height, data } = image ?? {};
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new CaptchaOCRError(
      `an image needs integer width and height >= 1, got ${width}x${height} ` +
        '(pass { width, height, data } or a canvas ImageData)',
    );
  }
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) {
    throw new CaptchaOCRError('an image\'s data must be a Uint8Array or Uint8ClampedArray of 8-bit pixels');
  }
  const channels = image.channels ?? data.length / (width * height);
  if (![1, 2, 3, 4].includes(channels) || data.length !== width * height * channels) {
    throw new CaptchaOCRError(
      `a ${width}x${height} image needs ${width * height} x 1, 2, 3 or 4 bytes of data, ` +
        `got ${data.length}${image.channels ? ` for ${image.channels} channels` : ''}`,
    );
  }
  return channels;
}

/**
 * Composite `value` with opacity `alpha` over white, as Pillow's Image.alpha_composite does
 * (integers, libImaging/AlphaComposite.c, with the destination opaque white).
 */
export function overWhite(value, alpha) {
  if (alpha === 0) return 255;
  const coef1 = alpha * 128; // src.a * 255 * 255 * 128 / (255 * 255): exact, as dst.a = 255
  const coef2 = 255 * 128 - coef1;
  const t = value * coef1 + 255 * coef2 + (0x80 << 7);
  return (((t >> 8) + t) >> 8) >> 7;
}

/** ITU-R 601-2 luma as Pillow's convert('L') computes it (libImaging/Convert.c, L24). */
export function grey(r, g, b) {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
}

/** `image` in grey (channels 1) or RGB (3): transparency composited on white, as
 * images.to_rgb_or_grey does. Returns a Uint8Array of width * height * channels. */
export function toRgbOrGrey(image, channels) {
  const from = imageChannels(image);
  const { data } = image;
  const n = image.width * image.height;
  const out = new Uint8Array(n * channels);
  const alpha = from === 2 || from === 4;
  const colour = from >= 3;
  for (let i = 0; i < n; i++) {
    const p = i * from;
    let r = data[p];
    let g = colour ? data[p + 1] : r;
    let b = colour ? data[p + 2] : r;
    if (alpha) {
      const a = data[p + from - 1];
      r = overWhite(r, a);
      g = colour ? overWhite(g, a) : r;
      b = colour ? overWhite(b, a) : r;
    }
    if (channels === 1) {
      out[i] = colour ? grey(r, g, b) : r;
    } else {
      out[i * 3] = r;
      out[i * 3 + 1] = g;
      out[i * 3 + 2] = b;
    }
  }
  return out;
}

// Pillow's resampling (libImaging/Resample.c) with its BILINEAR filter: a triangle of support
// 1, widened by the scale when shrinking (so a downscale averages every source pixel),
// coefficients in 22-bit fixed point, the horizontal pass first and rounded to 8 bits.
const PRECISION_BITS = 32 - 8 - 2;

function bilinearFilter(x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

/** Per output pixel: the first source pixel, the count, and the fixed-point weights. */
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = 0.0 + (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const w = bilinearFilter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? k[x] / ww : k[x];
      // normalize_coeffs_8bpc: round half away from zero, as C's (int) truncates.
      weights[xx * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, weights, ksize };
}

function clip8(sum) {
  const v = sum >> PRECISION_BITS; // sums stay within int32, as in C
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** One horizontal pass: `rows` rows of `src` from row `first` -> outWidth columns. */
function horizontalPass(src, width, channels, first, rows, outWidth, { bounds, weights, ksize }) {
  const out = new Uint8Array(outWidth * rows * channels);
  for (let y = 0; y < rows; y++) {
    const inRow = (y + first) * width * channels;
    const outRow = y * outWidth * channels;
    for (let xx = 0; xx < outWidth; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      const k = xx * ksize;
      for (let c = 0; c < channels; c++) {
        let sum = 1 << (PRECISION_BITS - 1);
        for (let x = 0; x < xmax; x++) sum += src[inRow + (x + xmin) * channels + c] * weights[k + x];
        out[outRow + xx * channels + c] = clip8(sum);
      }
    }
  }
  return out;
}

/** One vertical pass -> outHeight rows; source rows are numbered from `first`. */
function verticalPass(src, width, channels, first, outHeight, { bounds, weights, ksize }) {
  const rowLength = width * channels;
  const out = new Uint8Array(rowLength * outHeight);
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = bounds[yy * 2] - first;
    const ymax = bounds[yy * 2 + 1];
    const k = yy * ksize;
    for (let i = 0; i < rowLength; i++) {
      let sum = 1 << (PRECISION_BITS - 1);
      for (let y = 0; y < ymax; y++) sum += src[(y + ymin) * rowLength + i] * weights[k + y];
      out[yy * rowLength + i] = clip8(sum);
    }
  }
  return out;
}

/**
 * Resize 8-bit pixels (width * height * channels) to outWidth x outHeight exactly as Pillow's
 * Image.resize(size, Image.Resampling.BILINEAR) does (Pillow 13). Returns a new Uint8Array.
 */
export function resizeBilinear(data, width, height, channels, outWidth, outHeight) {
  const needHorizontal = outWidth !== width;
  const needVertical = outHeight !== height;
  if (!needHorizontal && !needVertical) return Uint8Array.from(data);
  const horiz = needHorizontal ? coefficients(width, outWidth) : null;
  const vert = needVertical ? coefficients(height, outHeight) : null;
  // Pillow runs the vertical pass first when the height shrinks by more than twice as many
  // pixels as the width: each pass rounds to 8 bits, so the order changes the result.
  const horizontalFirst = !(height - outHeight > 0 && height - outHeight > (width - outWidth) * 2);
  if (!needHorizontal) return verticalPass(data, width, channels, 0, outHeight, vert);
  if (!needVertical) return horizontalPass(data, width, channels, 0, height, outWidth, horiz);
  if (!horizontalFirst) {
    const temp = verticalPass(data, width, channels, 0, outHeight, vert);
    return horizontalPass(temp, width, channels, 0, outHeight, outWidth, horiz);
  }
  // Only the source rows that the vertical pass reads go through the horizontal pass.
  const first = vert.bounds[0];
  const last = vert.bounds[outHeight * 2 - 2] + vert.bounds[outHeight * 2 - 1];
  const temp = horizontalPass(data, width, channels, first, last - first, outWidth, horiz);
  return verticalPass(temp, outWidth, channels, first, outHeight, vert);
}

/** Any image -> the model input: (height, width, channels) 8-bit pixels, row by row (NHWC
 * without the batch), exactly as captcha_ocr.images.load_image. */
export function loadImage(image, height, width, channels) {
  const pixels = toRgbOrGrey(image, channels);
  return resizeBilinear(pixels, image.width, image.height, channels, width, height);
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
    this.spec = spec; // preset, charset, height, width, channels, max_label_length, blank_index
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
      const { classes: decoded, confidence } = greedyDecode(row, steps, classes);
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

// --- images in the browser -------------------------------------------------------------------

/** A Blob/File, <img>, ImageBitmap or canvas -> RGBA pixels, with the browser's decoder.
 * Exact for PNG without colour profile chunks and for opaque images; see docs/READERS.md. */
export async function imageFromBlob(source) {
  if (typeof createImageBitmap !== 'function' || typeof OffscreenCanvas !== 'function') {
    throw new CaptchaOCRError(
      'decoding images needs a browser (createImageBitmap, OffscreenCanvas); under Node use ' +
        'node-reader.mjs, or pass { width, height, data } pixels',
    );
  }
  const bitmap = await createImageBitmap(source, { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, bitmap.width, bitmap.height);
}

function toBytes(model) {
  if (model instanceof Uint8Array) return model;
  if (model instanceof ArrayBuffer) return new Uint8Array(model);
  if (ArrayBuffer.isView(model)) return new Uint8Array(model.buffer, model.byteOffset, model.byteLength);
  throw new CaptchaOCRError('the model must be the .onnx file\'s bytes (an ArrayBuffer or Uint8Array)');
}
