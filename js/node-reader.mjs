// The captcha reader under Node: onnxruntime-node runs the model, sharp (libvips, with the
// same libjpeg-turbo-family JPEG decoder as Pillow) decodes image files.
//
//   import { loadReader } from './node-reader.mjs';
//   const reader = await loadReader('runs/latest');            // a run folder or an .onnx file
//   console.log(await reader.read('captchas/2b827.png'));      // { text: '2b827', confidence: 0.99 }

import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';

import * as ort from 'onnxruntime-node';
import sharp from 'sharp';

import { CaptchaOCRError, CaptchaReader } from './captcha-reader.mjs';

export * from './captcha-reader.mjs';

export const ONNX_FILE = 'model.onnx'; // a run folder's exported model (captcha_ocr.runfolder)
// As captcha_ocr.images.DEFAULT_MAX_PIXELS: larger images are refused from their header.
export const DEFAULT_MAX_PIXELS = 25_000_000;

/** A run folder or an .onnx file -> the .onnx file, with a clear error if absent. */
export async function resolveModelPath(model) {
  const info = await stat(model).catch(() => null);
  if (!info) throw new CaptchaOCRError(`model ${model} not found (give a run folder or an .onnx file)`);
  if (!info.isDirectory()) return model;
  const onnx = path.join(model, ONNX_FILE);
  if (!(await stat(onnx).catch(() => null))?.isFile()) {
    throw new CaptchaOCRError(`run folder ${model} has no ${ONNX_FILE}; create it with: captcha-ocr export ${model}`);
  }
  return onnx;
}

/**
 * Open a run folder or an .onnx file. `threads`: ONNX Runtime intra-op threads (default: its
 * own choice). The reader's read() also takes file paths and encoded bytes (Buffer).
 */
export async function loadReader(model, { threads, maxPixels = DEFAULT_MAX_PIXELS } = {}) {
  const file = await resolveModelPath(model);
  const sessionOptions = threads ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {};
  return CaptchaReader.create(ort, await readFile(file), {
    sessionOptions,
    source: file,
    decodeImage: (source) => decodeImage(source, { maxPixels }),
  });
}

/**
 * Decode an image file (a path, or its bytes) into { width, height, channels, data } 8-bit
 * pixels: the first frame, no EXIF rotation. 16-bit images become 8 bits as Pillow makes
 * them: grey by rounding, colour by the high byte.
 */
export async function decodeImage(source, { maxPixels = DEFAULT_MAX_PIXELS } = {}) {
  const name = typeof source === 'string' ? source : '<bytes>';
  if (typeof source !== 'string' && !(source instanceof Uint8Array)) {
    throw new CaptchaOCRError('an image must be a file path, its bytes (Buffer, Uint8Array) or { width, height, data } pixels');
  }
  try {
    const image = sharp(source, { limitInputPixels: maxPixels, pages: 1 });
    const { space, hasAlpha } = await image.metadata();
    if (space === 'grey16' && !hasAlpha) {
      // Pillow opens a 16-bit grey PNG as "I;16" and scales it to 8 bits with rounding
      // (images.to_rgb_or_grey); sharp would keep the high byte, as Pillow does for colour.
      const { data, info } = await image.toColourspace('grey16').raw({ depth: 'ushort' }).toBuffer({ resolveWithObject: true });
      const wide = new Uint16Array(data.buffer, data.byteOffset, data.length / 2);
      const out = Uint8Array.from(wide, (v) => Math.floor((v / 65535) * 255 + 0.5));
      return { width: info.width, height: info.height, channels: 1, data: out };
    }
    const { data, info } = await image.raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, channels: info.channels, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
  } catch (error) {
    if (error instanceof CaptchaOCRError) throw error;
    const reason = String(error.message ?? error).split('\n')[0];
    if (/pixel limit/i.test(reason)) {
      throw new CaptchaOCRError(`${name}: image too large (over the limit of ${maxPixels.toLocaleString('en')} pixels)`);
    }
    if (error.code === 'ENOENT' || /missing|no such file/i.test(reason)) throw new CaptchaOCRError(`${name}: no such file`);
    throw new CaptchaOCRError(`${name}: unreadable image (${reason})`);
  }
}
