#include "shadows.h"

#include <cstring>
#include <map>
#include <vector>

namespace mustafar {

struct HostShadows::Copies {
    std::map<uintptr_t, std::vector<uint8_t>> map;

    void erase_overlapping(uintptr_t begin, uintptr_t end) {
        auto it = map.upper_bound(begin);
        if (it != map.begin()) {
            auto prev = std::prev(it);
            if (prev->first + prev->second.size() > begin) it = prev;
        }
        while (it != map.end() && it->first < end) it = map.erase(it);
    }
};

HostShadows::HostShadows() : copies_(std::make_unique<Copies>()) {}
HostShadows::~HostShadows() = default;

void HostShadows::record(const void* device, const void* host, size_t size) {
    const auto begin = reinterpret_cast<uintptr_t>(device);
    std::lock_guard<std::mutex> lock(mutex_);
    copies_->erase_overlapping(begin, begin + size);
    if (size == 0 || size > kMaxBytes) return;
    std::vector<uint8_t>& copy = copies_->map[begin];
    copy.resize(size);
    std::memcpy(copy.data(), host, size);
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
    if (begin + size > it->first + it->second.size()) return nullptr;
    return it->second.data() + (begin - it->first);
}

}  // namespace mustafar
