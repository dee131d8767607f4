// One decoder layer of one decode step on CPUs, as one op: the RMSNorm, GEMV and attention ops of this
// library plus ATen's add, SiLU and mul, called from C++ in the order the Python layer calls them, so
// the result is bit for bit the Python layer's on the same kernels; what goes is the Python between
// them (about 40 us a layer on a 2-vCPU Xeon).
//
//   x = rms_norm(h, input_norm); h = h + o(attention(qkv(x)))
//   x = rms_norm(h, post_norm);  gate, up = gate_up(x); h = h + down(silu(gate) * up)
//
// Included by each ISA's translation unit after gemv.h, rms_norm.h and decode_attention.h (whose
// functions it calls), with DECODE_LAYER_OP defined.
#pragma once

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <torch/library.h>

namespace {

// h [B, H]; each linear's weight with its scales and mins (or none) as gemv takes them and whether its
// activations are int8 (w8a8; per linear, as a format may keep some linears weight-only); the attention
// arguments as decode_attention's (`sequence`: h's rows are consecutive positions of one sequence). Returns the new
// h (the cache slot `index` written, or slots index.. with `sequence`).
at::Tensor decode_layer(const at::Tensor& h, const at::Tensor& input_norm, const at::Tensor& qkv_weight,
                        const std::optional<at::Tensor>& qkv_scales, const std::optional<at::Tensor>& qkv_mins,
                        bool qkv_int8_activations, const at::Tensor& o_weight, const std::optional<at::Tensor>& o_scales,
                        const std::optional<at::Tensor>& o_mins, bool o_int8_activations, const at::Tensor& post_norm,
                        const at::Tensor& gate_up_weight, const std::optional<at::Tensor>& gate_up_scales,
                        const std::optional<at::Tensor>& gate_up_mins, bool gate_up_int8_activations,
                        const at::Tensor& down_weight, const std::optional<at::Tensor>& down_scales,
                        const std::optional<at::Tensor>& down_mins, bool down_int8_activations, const at::Tensor& cos,
                        const at::Tensor& sin, at::Tensor k_cache, at::Tensor v_cache, const at::Tensor& index,
                        const at::Tensor& key_valid, int64_t span, int64_t heads, int64_t kv_heads, double eps,
                        double scale, bool sequence) {
  TORCH_CHECK(h.dim() == 2, "decode_layer: h [B, H]");
  const std::optional<at::ScalarType> same;  // each GEMV writes h's dtype
  // Each stage is a profiler scope named as its own op, so a trace still splits the layer by class.
  auto norm = [&](const at::Tensor& x, const at::Tensor& weight) {
    RECORD_USER_SCOPE("ascend_nb::rms_norm");
    return rms_norm(x, weight, eps);
  };
  auto linear = [&](const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& scales,
                    const std::optional<at::Tensor>& mins, bool int8_activations) {
    RECORD_USER_SCOPE("ascend_nb::gemv");
    return gemv(x, weight, scales, same, mins, int8_activations);
  };
  at::Tensor qkv = linear(norm(h, input_norm), qkv_weight, qkv_scales, qkv_mins, qkv_int8_activations);
  at::Tensor attended;
  {
    RECORD_USER_SCOPE("ascend_nb::decode_attention");
    attended = decode_attention(qkv, cos, sin, k_cache, v_cache, index, key_valid, span, heads, kv_heads, scale,
                                sequence);
  }
  at::Tensor mid = at::add(h, linear(attended, o_weight, o_scales, o_mins, o_int8_activations));
  std::vector<at::Tensor> gate_up = linear(norm(mid, post_norm), gate_up_weight, gate_up_scales, gate_up_mins,
                                              gate_up_int8_activations).chunk(2, -1);
  at::Tensor act = at::mul(at::silu(gate_up[0]), gate_up[1]);
  return at::add(mid, linear(act, down_weight, down_scales, down_mins, down_int8_activations));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ascend_nb, m) {
  m.def(DECODE_LAYER_OP "(Tensor h, Tensor input_norm, Tensor qkv_weight, Tensor? qkv_scales, Tensor? qkv_mins, "
                        "bool qkv_int8_activations, Tensor o_weight, Tensor? o_scales, Tensor? o_mins, "
                        "bool o_int8_activations, Tensor post_norm, Tensor gate_up_weight, Tensor? gate_up_scales, "
                        "Tensor? gate_up_mins, bool gate_up_int8_activations, Tensor down_weight, Tensor? down_scales, "
                        "Tensor? down_mins, bool down_int8_activations, Tensor cos, Tensor sin, Tensor(a!) k_cache, "
                        "Tensor(b!) v_cache, Tensor index, Tensor key_valid, int span, int heads, int kv_heads, "
                        "float eps, float scale, bool sequence=False) -> Tensor");
}
TORCH_LIBRARY_IMPL(ascend_nb, CPU, m) { m.impl(DECODE_LAYER_OP, &decode_layer); }
