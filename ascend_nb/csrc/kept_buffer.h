// A thread's working memory kept between calls of a kernel: a fresh buffer each call came from mmap and
// page-faulted on every first touch. 64-byte aligned (one cache line): std::vector's memory is only 16-byte
// aligned, and once glibc serves it from mmap every AMX tile row and AVX-512 load straddles two lines (measured:
// the AMX prompt kernel's time swung 0.6x-1.5x bf16's from one process to the next with where the buffer fell).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace {

template <typename T>
class KeptBuffer {
 public:
  KeptBuffer() = default;
  KeptBuffer(const KeptBuffer&) = delete;
  KeptBuffer& operator=(const KeptBuffer&) = delete;
  ~KeptBuffer() { std::free(data_); }

  // At least `count` values, their contents undefined after growing.
  T* get(size_t count) {
    if (count > capacity_) {
      std::free(data_);
      constexpr size_t kLine = 64;
      data_ = static_cast<T*>(std::aligned_alloc(kLine, (count * sizeof(T) + kLine - 1) / kLine * kLine));
      if (!data_) throw std::bad_alloc();
      capacity_ = count;
    }
    return data_;
  }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace
