// Decode GEMV of a linear layer: y[t, n] = sum_k W[n, k] · x[t, k] (+ y[t, n] when ACC = 1) for the
// p.T rows t of x (a few tokens, 1 .. MAX_T).
//
// x and y are f32, row-major ([T, K] and [T, N]). W is [N, K] in its file layout, packed in u32
// words of dtype WDTYPE (dtype.wgsl); 16-bit dtypes need an even K.
//
// A workgroup owns ROWS consecutive rows of W, TPR threads per row. The threads of a row stride over
// it 16 bytes at a time (coalesced vec4<u32> loads through `wv`): each weight vec4 is loaded and
// unpacked once and multiplied with every row of x. A row starts on a 16-byte boundary only when K
// allows it, so each row is split into an unaligned head (< 4 words), an aligned body read as vec4,
// and a tail (< 4 words); head and tail are read word by word through `wu`, which binds the same
// buffer range. No load ever leaves the row, whatever K is.
//
// Each thread keeps its partial sums in its own slots of workgroup memory (`part`), one per row of
// x: T is a runtime value, so the loop over it is not unrolled and one pipeline serves every T
// (dynamically indexed private arrays would spill anyway). After one barrier, lane t of each weight
// row adds up column t of that row's TPR partial sums (so TPR >= MAX_T).
//
// Dispatch: ceil(N / ROWS) workgroups as a 2-D grid (linear index wid.x + wid.y * nwg.x).
struct Params {
  T: u32,
  K: u32,
  N: u32,
}

// Threads per row (>= MAX_T) and rows per workgroup: the workgroup has TPR * ROWS threads.
override TPR: u32 = 32u;
override ROWS: u32 = 8u;
// 1: add the product to the existing y; 0: overwrite y.
override ACC: u32 = 0u;

const MAX_T: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wv: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> wu: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// part[t * TPR * ROWS + thread]: the thread's partial sum for row t of x.
var<workgroup> part: array<f32, MAX_T * TPR * ROWS>;

// One packed word (W[n, k], and W[n, k + 1] for 16-bit dtypes) times x[xi ..].
fn dot_word(word: u32, xi: u32) -> f32 {
  let v = unpack_word(word);
  if (WDTYPE == 0u) {
    return v.x * x[xi];
  }
  return v.x * x[xi] + v.y * x[xi + 1u];
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
  for (var t = 0u; t < p.T; t++) {
    part[t * stride + lid] = 0.0;
  }

  if (n < p.N) {
    let ppw = w_per_word();
    let row_words = p.K / ppw;
    let rs = n * row_words; // first word of the row
    let re = rs + row_words; // one past its last word
    let a = min((rs + 3u) & ~3u, re); // end of the head = start of the aligned body
    let b = max(re & ~3u, a); // end of the body = start of the tail
    // Head and tail words (at most 3 each), one per lane.
    let nhead = a - rs;
    for (var i = lane; i < nhead + re - b; i += TPR) {
      let wi = select(b + i - nhead, rs + i, i < nhead);
      let word = wu[wi];
      let k = (wi - rs) * ppw;
      for (var t = 0u; t < p.T; t++) {
        part[t * stride + lid] += dot_word(word, t * p.K + k);
      }
    }
    // Aligned body: 4 words (4 or 8 weights) per load.
    for (var v = a / 4u + lane; v < b / 4u; v += TPR) {
      let q = wv[v];
      let k = (v * 4u - rs) * ppw;
      for (var t = 0u; t < p.T; t++) {
        let xi = t * p.K + k;
        let s = dot_word(q.x, xi) + dot_word(q.y, xi + ppw) + dot_word(q.z, xi + 2u * ppw) +
          dot_word(q.w, xi + 3u * ppw);
        part[t * stride + lid] += s;
      }
    }
  }
  workgroupBarrier();

  // Lane t of each weight row sums that row's partial sums for row t of x.
  if (lane < p.T && n < p.N) {
    let base = lane * stride + lid - lane;
    var s = 0.0;
    for (var i = 0u; i < TPR; i++) {
      s += part[base + i];
    }
    let idx = lane * p.N + n;
    if (ACC != 0u) {
      s += y[idx];
    }
    y[idx] = s;
  }
}
