// Host copies of the small tensors llama.cpp uploads into device memory each step (the attention
// mask, the cache rows to write), so that the KV store's host bookkeeping reads them without
// waiting for the GPU. A copy stays exact because every write into device memory either records
// it (set_tensor, a copy op whose source has one) or drops the copies it overlaps.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

namespace mustafar {

class HostShadows {
public:
    HostShadows();
    ~HostShadows();

    // Uploads larger than this are not copied. Weights never come here; the largest graph input is a
    // prompt's mask: 512 rows over 8 sequences of 32K cells take 256 MB, and a copy costs the host a
    // memcpy while a read-back would stall the GPU.
    static constexpr size_t kMaxBytes = size_t(512) << 20;

    // [device, device + size) now holds `host`'s bytes.
    void record(const void* device, const void* host, size_t size);
    // The same without a copy: `host` itself stands as the copy until drop_borrowed(). For uploads from
    // memory that nothing writes until then (llama.cpp's host buffers, written only between graphs).
    void borrow(const void* device, const void* host, size_t size);
    // Forgets every borrowed copy (the end of a graph: their memory may be written from now on).
    void drop_borrowed();
    // [device, device + size) was written by something else.
    void invalidate(const void* device, size_t size);
    // Bytes copied by record() so far (the tests: which uploads keep a host copy); borrowed ones are not.
    uint64_t recorded_bytes() const { return recorded_.load(std::memory_order_relaxed); }
    // Runs fn(host) with the host copy of [device, device + size) when one covers it wholly, and
    // returns whether it did; the copy stays valid (under the lock) while fn runs.
    template <typename Fn>
    bool with(const void* device, size_t size, Fn fn) {
        std::lock_guard<std::mutex> lock(mutex_);
        const uint8_t* host = find(device, size);
        if (host == nullptr) return false;
        fn(host);
        return true;
    }

private:
    const uint8_t* find(const void* device, size_t size) const;

    struct Copies;  // by device address (shadows.cpp)
    std::mutex mutex_;
    std::unique_ptr<Copies> copies_;
    std::atomic<uint64_t> recorded_{0};
};

}  // namespace mustafar
