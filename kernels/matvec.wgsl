// Decode GEMV of a linear layer: y[t, n] = sum_k W[n, k] · x[t, k] (+ y[t, n] when ACC = 1) for the
// p.T rows t of x (a few tokens).
//
// x and y are f32, row-major ([T, K] and [T, N]). W is [N, K] in its file layout, packed in u32
// words of dtype WDTYPE (dtype.wgsl); 16-bit dtypes need an even K.
//
// A workgroup owns ROWS consecutive rows of W, TPR threads per row. The threads of a row stride over
// it 16 bytes at a time (coalesced vec4<u32> loads through `wv`). A row starts on a 16-byte boundary
// only when K allows it, so each row is split into an unaligned head (< 4 words), an aligned body
// read as vec4, and a tail (< 4 words); head and tail are read word by word through `wu`, which
// binds the same buffer range (`wv` covers its whole 16-byte blocks only). No load ever leaves the
// row, whatever K is.
//
// The rows of x are taken TB at a time (one pass over the weight rows per TB rows of x; later passes
// re-read the workgroup's weight rows from cache). Each pass ends with a tree reduction of the TPR
// partial sums of every weight row in workgroup memory.
//
// Dispatch: ceil(N / ROWS) workgroups as a 2-D grid (linear index wid.x + wid.y * nwg.x).
struct Params {
  T: u32,
  K: u32,
  N: u32,
  // 1 when every row starts on a 16-byte boundary (K / values-per-word is a multiple of 4): the body
  // then reads x as vec4 too (`xv`) and does its math on vectors.
  xvec: u32,
}

// Threads per weight row (a power of two) and weight rows per workgroup: TPR * ROWS threads.
override TPR: u32 = 32u;
override ROWS: u32 = 8u;
// Rows of x per pass over the weights (1 .. MAX_TB). Larger values read W once for more tokens but
// unroll more code (llvmpipe compiles TB > 1 very slowly).
override TB: u32 = 1u;
// 1: add the product to the existing y; 0: overwrite y.
override ACC: u32 = 0u;

const MAX_TB: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wv: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> wu: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> xv: array<vec4<f32>>;

// red[j * TPR * ROWS + thread]: partial sums of the pass's row j of x.
var<workgroup> red: array<f32, TB * TPR * ROWS>;

// One packed word (W[n, k], and W[n, k + 1] for 16-bit dtypes) times x[xi] (and x[xi + 1]).
fn dot_word(word: u32, xi: u32) -> f32 {
  let v = unpack_word(word);
  if (WDTYPE == 0u) {
    return v.x * x[xi];
  }
  return v.x * x[xi] + v.y * x[xi + 1u];
}

// Four packed words (4 or 8 weights) times the matching x values, read as vec4 from x element 4 * xi4.
fn dot_quad(q: vec4<u32>, xi4: u32) -> f32 {
  if (WDTYPE == 0u) {
    return dot(bitcast<vec4<f32>>(q), xv[xi4]);
  }
  let xa = xv[xi4];
  let xb = xv[xi4 + 1u];
  if (WDTYPE == 2u) {
    // bf16: the low halves are weights 0, 2, 4, 6 and the high halves 1, 3, 5, 7.
    let lo = bitcast<vec4<f32>>(q << vec4<u32>(16u));
    let hi = bitcast<vec4<f32>>(q & vec4<u32>(0xffff0000u));
    return dot(lo, vec4<f32>(xa.x, xa.z, xb.x, xb.z)) + dot(hi, vec4<f32>(xa.y, xa.w, xb.y, xb.w));
  }
  let w0 = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
  let w1 = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
  return dot(w0, xa) + dot(w1, xb);
}

@compute @workgroup_size(TPR * ROWS)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row0 = (wid.x + wid.y * nwg.x) * ROWS;
  if (row0 >= p.N) {
    return;
  }
  let lane = lid % TPR;
  let n = row0 + lid / TPR;
  let stride = TPR * ROWS;
  let ppw = w_per_word();
  let row_words = select(0u, p.K / ppw, n < p.N); // rows past N are empty (but join barriers)
  let rs = n * row_words; // first word of the row
  let re = rs + row_words; // one past its last word
  let a = min((rs + 3u) & ~3u, re); // end of the head = start of the aligned body
  let b = max(re & ~3u, a); // end of the body = start of the tail
  let nhead = a - rs;
  let nedge = nhead + re - b;

  var acc: array<f32, MAX_TB>;
  for (var t0 = 0u; t0 < p.T; t0 += TB) {
    // Reset explicitly: some WGSL compilers do not re-zero a `var` declared inside a loop.
    acc = array<f32, MAX_TB>();
    // Head and tail words (at most 3 each), one per lane.
    for (var i = lane; i < nedge; i += TPR) {
      let wi = select(b + i - nhead, rs + i, i < nhead);
      let word = wu[wi];
      let k = (wi - rs) * ppw;
      for (var j = 0u; j < TB; j++) {
        if (t0 + j < p.T) {
          acc[j] += dot_word(word, (t0 + j) * p.K + k);
        }
      }
    }
    // Aligned body: 4 words (4 or 8 weights) per load.
    if (p.xvec != 0u) {
      for (var v = a / 4u + lane; v < b / 4u; v += TPR) {
        let q = wv[v];
        let k = (v * 4u - rs) * ppw;
        for (var j = 0u; j < TB; j++) {
          if (t0 + j < p.T) {
            acc[j] += dot_quad(q, ((t0 + j) * p.K + k) / 4u);
          }
        }
      }
    }
    for (var v = a / 4u + lane; p.xvec == 0u && v < b / 4u; v += TPR) {
      let q = wv[v];
      let k = (v * 4u - rs) * ppw;
      for (var j = 0u; j < TB; j++) {
        if (t0 + j < p.T) {
          let xi = (t0 + j) * p.K + k;
          acc[j] += dot_word(q.x, xi) + dot_word(q.y, xi + ppw) + dot_word(q.z, xi + 2u * ppw) +
            dot_word(q.w, xi + 3u * ppw);
        }
      }
    }

    for (var j = 0u; j < TB; j++) {
      red[j * stride + lid] = acc[j];
    }
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
      if (lane < s) {
        for (var j = 0u; j < TB; j++) {
          red[j * stride + lid] += red[j * stride + lid + s];
        }
      }
      workgroupBarrier();
    }
    if (lane == 0u && n < p.N) {
      for (var j = 0u; j < TB; j++) {
        let t = t0 + j;
        if (t < p.T) {
          let idx = t * p.N + n;
          var r = red[j * stride + lid];
          if (ACC != 0u) {
            r += y[idx];
          }
          y[idx] = r;
        }
      }
    }
    workgroupBarrier(); // red is reused by the next pass
  }
}
