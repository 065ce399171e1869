// Decode-loop bookkeeping on the GPU, so that tokens can be generated without a CPU round trip:
// after the sampler wrote the next token into ids[0], record it in history[count] and advance the
// position by p.advance. state = [pos, count]: pos is also the `pos[0]` that RoPE, the KV cache and
// attention read.
struct Params {
  advance: u32,
  capacity: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> state: array<u32>;
@group(0) @binding(3) var<storage, read_write> history: array<u32>;

@compute @workgroup_size(1)
fn main() {
  let count = state[1];
  if (count < p.capacity) {
    history[count] = ids[0];
  }
  state[0] = state[0] + p.advance;
  state[1] = count + 1u;
}
