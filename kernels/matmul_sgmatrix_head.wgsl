// Head of the staging includes of matmul_sgmatrix.wgsl (see there), before the tile layout
// (matmul_sgmatrix_scalar.wgsl or matmul_sgmatrix_vec4.wgsl): the enable directives and the matrix
// types.
enable f16;
enable chromium_experimental_subgroup_matrix;
// Subgroup-matrix calls must be subgroup-uniform. Offsets here depend on the subgroup index
// (local_invocation_index / 32), which the analysis cannot prove uniform; they are uniform per
// subgroup by construction.
diagnostic(off, chromium.subgroup_matrix_uniformity);

// The staging type of x and W.
alias h16 = f16;
// Left (x rows), right (W^T) and result matrices, 16 x 16 each.
alias mat_a = subgroup_matrix_left<f16, 16, 16>;
alias mat_b = subgroup_matrix_right<f16, 16, 16>;
alias mat_c = subgroup_matrix_result<f32, 16, 16>;
// Largest TM and TN (arrays of matrices in registers need constant sizes).
const MAX_TM: u32 = 4u;
const MAX_TN: u32 = 4u;
