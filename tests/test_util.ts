/**
 * Helpers of the end-to-end tests: the repository's test helpers (`runtime/test_util.ts`) and seeded
 * inputs (`kernels/check.ts`). Test code only.
 * @module
 */
export { GPU_TEST, rejects, testGpu, withTempDir } from "../runtime/test_util.ts";
export { randn, rng } from "../kernels/check.ts";
