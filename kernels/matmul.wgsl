// Prefill GEMM of a linear layer: y[T, N] = x[T, K] · W[N, K]^T (+ y when ACC = 1).
//
// x and y are f32, row-major. W is the weight matrix in its file layout (row n holds the K inputs
// of output n), packed in u32 words of dtype WDTYPE (dtype.wgsl); 16-bit dtypes need an even K so
// that every row starts on a word. Block-quantised weights (WDTYPE 3 = Q8_0, 4 = Q4_K, 5 = Q5_K,
// 6 = Q6_K, 7 = Q5_0, 8 = Q4_0: rows of whole blocks, K a multiple of 32 or 256) are decoded while staged
// (quant_values.wgsl), so the multiply is the f32 one over the dequantised values.
//
// Tiling: a workgroup of WGX x WGY threads computes a BM x BN block of y (BM = 4 * WGY rows of x,
// BN = 4 * WGX outputs), each thread a 4 x 4 register block. K is walked in steps of BK: the x and
// W slices of a step are staged in workgroup memory (zero-padded past T, N and K, so edges need no
// special cases in the inner loop) and the inner loop does 16 FMAs per two vec4 workgroup loads.
// Workgroup memory: 4 * BK * (BM + BN) bytes (8 KiB at the defaults, under the 16 KiB minimum).
//
// Dispatch: (ceil(N / BN), ceil(T / BM), 1) workgroups.
struct Params {
  T: u32,
  K: u32,
  N: u32,
}

// Threads along N (each owns 4 consecutive outputs) and along T (each owns 4 consecutive rows).
override WGX: u32 = 16u;
override WGY: u32 = 16u;
// K step staged per iteration; must be even (16-bit words hold two K values).
override BK: u32 = 16u;
// 1: add the product to the existing y; 0: overwrite y.
override ACC: u32 = 0u;

const BM_PER_THREAD: u32 = 4u;
const BN_PER_THREAD: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// Word i of the weights, for quant_values.wgsl.
fn q_word(i: u32) -> u32 {
  return w[i];
}

// xs[k * WGY + i] holds x rows 4i .. 4i+3 of the tile at K offset k (a vec4 over rows).
var<workgroup> xs: array<vec4<f32>, BK * WGY>;
// ws[k * WGX + j] holds W rows 4j .. 4j+3 of the tile at K offset k (a vec4 over outputs).
var<workgroup> ws: array<vec4<f32>, BK * WGX>;

@compute @workgroup_size(WGX, WGY)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) lid3: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let nthreads = WGX * WGY;
  let BM = BM_PER_THREAD * WGY;
  let BN = BN_PER_THREAD * WGX;
  let t0 = wid.y * BM;
  let n0 = wid.x * BN;
  let tx = lid3.x;
  let ty = lid3.y;
  let ppw = w_per_word();
  let row_words = p.K / ppw; // words per W row (K is even for 16-bit dtypes)
  let bk_words = BK / ppw; // words per W row within one K step

  var acc: array<vec4<f32>, 4>;

  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    // Stage x[t0 .. t0+BM, k0 .. k0+BK]: consecutive threads read consecutive k (coalesced).
    for (var e = lid; e < BM * BK; e += nthreads) {
      let m = e / BK;
      let kk = e % BK;
      let t = t0 + m;
      let k = k0 + kk;
      var v = 0.0;
      if (t < p.T && k < p.K) {
        v = x[t * p.K + k];
      }
      xs[kk * WGY + m / 4u][m % 4u] = v;
    }
    if (q_quantised()) {
      // Stage W[n0 .. n0+BN, k0 .. k0+BK] four values at a time, decoded from their blocks
      // (quant_values.wgsl); BK is a multiple of 4 and K of 32, so a group never crosses K.
      let rb = q_row_bytes(p.K);
      for (var e = lid; e < BN * (BK / 4u); e += nthreads) {
        let nn = e / (BK / 4u);
        let kk = (e % (BK / 4u)) * 4u;
        let n = n0 + nn;
        var v = vec4<f32>(0.0);
        if (n < p.N && k0 + kk < p.K) {
          v = q_values4(n * rb, k0 + kk);
        }
        for (var i = 0u; i < 4u; i++) {
          ws[(kk + i) * WGX + nn / 4u][nn % 4u] = v[i];
        }
      }
    } else {
      // Stage W[n0 .. n0+BN, k0 .. k0+BK], one packed word (1 or 2 values) per step.
      for (var e = lid; e < BN * bk_words; e += nthreads) {
        let nn = e / bk_words;
        let kk = (e % bk_words) * ppw;
        let n = n0 + nn;
        let k = k0 + kk;
        var v = vec2<f32>(0.0, 0.0);
        if (n < p.N && k < p.K) {
          v = unpack_word(w[n * row_words + k / ppw]);
        }
        ws[kk * WGX + nn / 4u][nn % 4u] = v.x;
        if (ppw == 2u) {
          ws[(kk + 1u) * WGX + nn / 4u][nn % 4u] = v.y;
        }
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let a = xs[kk * WGY + ty];
      let b = ws[kk * WGX + tx];
      acc[0] += a.x * b;
      acc[1] += a.y * b;
      acc[2] += a.z * b;
      acc[3] += a.w * b;
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < BM_PER_THREAD; i++) {
    let t = t0 + ty * BM_PER_THREAD + i;
    if (t >= p.T) {
      break;
    }
    for (var j = 0u; j < BN_PER_THREAD; j++) {
      let n = n0 + tx * BN_PER_THREAD + j;
      if (n >= p.N) {
        break;
      }
      let idx = t * p.N + n;
      var v = acc[i][j];
      if (ACC != 0u) {
        v += y[idx];
      }
      y[idx] = v;
    }
  }
}
