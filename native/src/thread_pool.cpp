#include "thread_pool.h"

#include <algorithm>

namespace mustafar {

ThreadPool::ThreadPool(int n_threads) { start(n_threads); }

ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::resize(int n_threads) {
    if (std::max(1, n_threads) == size()) return;
    stop();
    start(n_threads);
}

void ThreadPool::start(int n_threads) {
    quit_ = false;
    const int extra = std::max(1, n_threads) - 1;
    workers_.reserve(extra);
    for (int i = 0; i < extra; ++i) workers_.emplace_back([this, i] { worker(i + 1); });
}

void ThreadPool::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        quit_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
}

static void run_range(const std::function<void(int64_t, int64_t, int)>& fn, int64_t n, int index, int count) {
    const int64_t chunk = (n + count - 1) / count;
    const int64_t begin = std::min(n, chunk * index);
    const int64_t end = std::min(n, begin + chunk);
    if (begin < end) fn(begin, end, index);
}

void ThreadPool::worker(int index) {
    uint64_t seen = 0;
    for (;;) {
        const std::function<void(int64_t, int64_t, int)>* job;
        int64_t n;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return quit_ || generation_ != seen; });
            if (quit_) return;
            seen = generation_;
            job = job_;
            n = job_n_;
        }
        run_range(*job, n, index, size());
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (--pending_ == 0) done_.notify_one();
        }
    }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) {
    if (n <= 0) return;
    if (workers_.empty() || n == 1) {
        fn(0, n, 0);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        job_ = &fn;
        job_n_ = n;
        pending_ = int(workers_.size());
        ++generation_;
    }
    wake_.notify_all();
    run_range(fn, n, 0, size());
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
}

}  // namespace mustafar
