// The one preprocessing path of the JavaScript reader, bit for bit that of the Python reader
// (src/captcha_ocr/images.py): any image -> the model's (height, width, channels) 8-bit input.
// Pillow's integer arithmetic is reproduced exactly (alpha compositing, grey conversion,
// bilinear resampling); docs/READERS.md explains each step.
//
// An image is { width, height, data, channels? }: 8-bit pixels, row by row; channels 1 (grey),
// 2 (grey + alpha), 3 (RGB) or 4 (RGBA; the default, so a canvas ImageData works as is).

/** Every error the reader raises: the message says what is wrong and what to do. */
export class CaptchaOCRError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CaptchaOCRError';
  }
}

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

// --- images in the browser -------------------------------------------------------------------

/** A Blob/File, <img>, ImageBitmap or canvas -> RGBA pixels, with the browser's decoder: in
 * Chromium, Pillow's pixels for PNG, JPEG, GIF and WebP (tested), but for 16-bit grey PNGs. */
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
