// An XLA FFI handler for benchmarks.jax_cpu_profile --ffi: y = max(a @ b + shift, 0)
// (or without the max), the product computed by a CBLAS sgemm whose address the
// benchmark passes in (numpy's bundled OpenBLAS, 64-bit integers). Measures what a
// BLAS library would give the 1x1 convolutions XLA:CPU runs slowly at small sizes; it
// is not part of the package.
#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// cblas_sgemm with 64-bit integer arguments (OpenBLAS's ILP64 build).
typedef void (*Sgemm)(int order, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                      float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                      float beta, float* c, int64_t ldc);
static Sgemm g_sgemm = nullptr;

extern "C" void dasl_set_sgemm(void* fn) { g_sgemm = reinterpret_cast<Sgemm>(fn); }

static ffi::Error MatmulShiftImpl(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                                  ffi::Buffer<ffi::F32> shift, ffi::ResultBuffer<ffi::F32> out,
                                  bool relu) {
  if (g_sgemm == nullptr) {
    return ffi::Error(ffi::ErrorCode::kFailedPrecondition, "dasl_set_sgemm was not called");
  }
  const int64_t m = a.dimensions()[0], k = a.dimensions()[1], n = b.dimensions()[1];
  float* y = out->typed_data();
  const int kRowMajor = 101, kNoTrans = 111;
  g_sgemm(kRowMajor, kNoTrans, kNoTrans, m, n, k, 1.0f, a.typed_data(), k, b.typed_data(), n,
          0.0f, y, n);
  const float* s = shift.typed_data();
  for (int64_t i = 0; i < m; ++i) {
    float* row = y + i * n;
    for (int64_t j = 0; j < n; ++j) {
      const float v = row[j] + s[j];
      row[j] = (relu && v < 0.0f) ? 0.0f : v;
    }
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(DaslMatmulShift, MatmulShiftImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("relu"));
