#include "shadows.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

namespace mustafar {

namespace {
// From this size on a copy is split over up to kCopyThreads threads (the caller's among them). One thread
// copies about 9 GB/s on the build machine (a 128 MB mask in 14-15 ms, cpu-shadows-2026-12-01.md), and the
// CUDA flavour's set_tensor returns only when an upload's host copy is done: on the H200 machine a batch-8
// prompt graph over the store spent 21 ms on 108 MB of uploads, a dense cache's (no copies) 4 ms on 209 MB
// (gpu-e2e-2026-12-02.md, thirtieth session).
constexpr size_t kSplitCopyBytes = size_t(16) << 20;
constexpr unsigned kCopyThreads = 4;

void copy_bytes(uint8_t* dst, const void* src_bytes, size_t size) {
    const auto* src = static_cast<const uint8_t*>(src_bytes);
    const unsigned n = size < kSplitCopyBytes ? 1u : std::min(kCopyThreads, std::max(1u, std::thread::hardware_concurrency()));
    const size_t part = (size / n + 4095) / 4096 * 4096;
    std::vector<std::thread> threads;
    size_t begin = part;  // parts from here on go to other threads while this one copies the first
    try {
        for (; n > 1 && begin < size; begin += part) {
            const size_t bytes = std::min(part, size - begin);
            threads.emplace_back([=] { std::memcpy(dst + begin, src + begin, bytes); });
        }
    } catch (const std::system_error&) {
        // no thread for this part: this one copies the rest below
    }
    std::memcpy(dst, src, std::min(part, size));
    if (begin < size) std::memcpy(dst + begin, src + begin, size - begin);
    for (std::thread& t : threads) t.join();
}

// A host copy's bytes, allocated without the zero fill of a vector (every byte is written at once);
// capacity >= size. A borrowed copy owns nothing: its bytes are the upload's source.
struct Copy {
    std::unique_ptr<uint8_t[]> bytes;
    size_t size = 0, capacity = 0;
    const uint8_t* borrowed = nullptr;
    const uint8_t* data() const { return borrowed != nullptr ? borrowed : bytes.get(); }
};
}  // namespace

struct HostShadows::Copies {
    std::map<uintptr_t, Copy> map;

    void erase_overlapping(uintptr_t begin, uintptr_t end) {
        auto it = map.upper_bound(begin);
        if (it != map.begin()) {
            auto prev = std::prev(it);
            if (prev->first + prev->second.size > begin) it = prev;
        }
        while (it != map.end() && it->first < end) it = map.erase(it);
    }
};

HostShadows::HostShadows() : copies_(std::make_unique<Copies>()) {}
HostShadows::~HostShadows() = default;

// llama.cpp uploads each graph input to the same place every step: a copy at the same address is
// overwritten in place when it has the room (a prompt's mask grows with the cells in use, micro-batch
// by micro-batch, so a new copy gets half as much again in room). Freeing and allocating it again cost
// page faults: recording a 128 MB mask took about 90 ms that way on the build machine, 15 ms in place
// (native/bench/shadows_bench, bench/results/cpu-shadows-2026-12-01.md).
void HostShadows::record(const void* device, const void* host, size_t size) {
    const auto begin = reinterpret_cast<uintptr_t>(device);
    std::lock_guard<std::mutex> lock(mutex_);
    if (size > 0 && size <= kMaxBytes) {
        recorded_.fetch_add(size, std::memory_order_relaxed);
        auto same = copies_->map.find(begin);
        if (same != copies_->map.end() && same->second.borrowed == nullptr && same->second.capacity >= size) {
            // Copies do not overlap: only those starting inside the new range can meet it.
            copies_->map.erase(std::next(same), copies_->map.lower_bound(begin + size));
            same->second.size = size;
            copy_bytes(same->second.bytes.get(), host, size);
            return;
        }
    }
    copies_->erase_overlapping(begin, begin + size);
    if (size == 0 || size > kMaxBytes) return;
    Copy& copy = copies_->map[begin];
    copy.capacity = std::min(size + size / 2, kMaxBytes);  // room for the next micro-batches' larger masks
    copy.bytes.reset(new uint8_t[copy.capacity]);
    copy.size = size;
    copy_bytes(copy.bytes.get(), host, size);
}

void HostShadows::borrow(const void* device, const void* host, size_t size) {
    const auto begin = reinterpret_cast<uintptr_t>(device);
    std::lock_guard<std::mutex> lock(mutex_);
    copies_->erase_overlapping(begin, begin + size);
    if (size == 0) return;
    Copy& copy = copies_->map[begin];
    copy.borrowed = static_cast<const uint8_t*>(host);
    copy.size = size;
}

void HostShadows::drop_borrowed() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = copies_->map.begin(); it != copies_->map.end();) it = it->second.borrowed != nullptr ? copies_->map.erase(it) : std::next(it);
}

void HostShadows::invalidate(const void* device, size_t size) {
    const auto begin = reinterpret_cast<uintptr_t>(device);
    std::lock_guard<std::mutex> lock(mutex_);
    copies_->erase_overlapping(begin, begin + size);
}

const uint8_t* HostShadows::find(const void* device, size_t size) const {
    const auto begin = reinterpret_cast<uintptr_t>(device);
    auto it = copies_->map.upper_bound(begin);
    if (it == copies_->map.begin()) return nullptr;
    --it;
    if (begin + size > it->first + it->second.size) return nullptr;
    return it->second.data() + (begin - it->first);
}

}  // namespace mustafar
