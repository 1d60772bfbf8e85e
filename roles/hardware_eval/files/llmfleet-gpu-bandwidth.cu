// llmfleet-gpu-bandwidth: PCIe and device memory bandwidth of every GPU, and
// peer-to-peer bandwidth between GPUs, printed as one JSON document.
//
// Installed and compiled on the host by the hardware_eval role (llmfleet), with
// the nvcc the cuda_toolkit role installed:
//
//   nvcc -O2 -o llmfleet-gpu-bandwidth llmfleet-gpu-bandwidth.cu
//   CUDA_DEVICE_ORDER=PCI_BUS_ID ./llmfleet-gpu-bandwidth --sizes-mib 1,16,64,256 --iterations 10
//
// For each GPU and each size: host-to-device and device-to-host copies from
// and to pinned host memory (cudaMallocHost), and device-to-device copies,
// timed with CUDA events on a stream of their own, one warm-up copy first.
// Rates are GiB/s (2^30 bytes per second); a device-to-device copy reads and
// writes each byte, so it counts 2 x bytes (as NVIDIA's bandwidthTest does).
// For each ordered pair of GPUs that cudaDeviceCanAccessPeer allows, peer
// access is enabled and cudaMemcpyPeerAsync timed with the largest size; a
// pair without peer access is listed with "peer_access": false and no rate.
//
// Every CUDA call is checked. On the first failure the program prints
// {"error": "<call>: <message> (<error name>)"} and exits 1; nothing else is
// printed to stdout, so stdout is always one JSON document.
//
// Copies only: no kernel is compiled, so the program runs on any GPU the
// CUDA runtime supports whatever the compiler's default architecture.

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

const char *const kProgram = "llmfleet-gpu-bandwidth";
const int kVersion = 1;
const double kGiB = 1073741824.0;

[[noreturn]] void fail(const std::string &what) {
  std::string escaped;
  for (char c : what) {
    if (c == '"' || c == '\\') {
      escaped += '\\';
      escaped += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      escaped += ' ';
    } else {
      escaped += c;
    }
  }
  std::printf("{\"program\": \"%s\", \"version\": %d, \"error\": \"%s\"}\n", kProgram, kVersion,
              escaped.c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "%s: %s\n", kProgram, what.c_str());
  std::exit(1);
}

void check(cudaError_t status, const char *call) {
  if (status != cudaSuccess) {
    fail(std::string(call) + ": " + cudaGetErrorString(status) + " (" + cudaGetErrorName(status) +
         ")");
  }
}

#define CHECK(call) check((call), #call)

std::string json_string(const char *text) {
  std::string out = "\"";
  for (const char *p = text; *p; ++p) {
    if (*p == '"' || *p == '\\') {
      out += '\\';
      out += *p;
    } else if (static_cast<unsigned char>(*p) >= 0x20) {
      out += *p;
    }
  }
  return out + "\"";
}

std::string number(double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", value);
  return buf;
}

// The GPU's UUID as nvidia-smi prints it: GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.
std::string uuid_text(const cudaUUID_t &uuid) {
  std::string out = "GPU-";
  char buf[4];
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned char>(uuid.bytes[i]));
    out += buf;
  }
  return out;
}

// Seconds for `iterations` calls of `copy` (each queues one copy on `stream`) after one
// warm-up call, timed with CUDA events on `stream`.
template <typename Copy>
double time_on_stream(Copy copy, int iterations, cudaStream_t stream) {
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  copy();
  CHECK(cudaStreamSynchronize(stream));
  CHECK(cudaEventRecord(start, stream));
  for (int i = 0; i < iterations; ++i) {
    copy();
  }
  CHECK(cudaEventRecord(stop, stream));
  CHECK(cudaEventSynchronize(stop));
  float ms = 0.0f;
  CHECK(cudaEventElapsedTime(&ms, start, stop));
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  return ms / 1000.0;
}

// Seconds for `iterations` copies of `bytes` after one warm-up copy, timed on `stream`.
double time_copies(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, int iterations,
                   cudaStream_t stream) {
  return time_on_stream([&] { CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream)); },
                        iterations, stream);
}

std::string rate(size_t bytes, double counted, int iterations, double seconds) {
  const double gib_per_s = seconds > 0.0 ? counted * iterations / seconds / kGiB : 0.0;
  return "{\"bytes\": " + std::to_string(bytes) + ", \"gib_per_s\": " + number(gib_per_s) + "}";
}

std::string measure_device(int device, const std::vector<size_t> &sizes, int iterations) {
  CHECK(cudaSetDevice(device));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, device));
  char bus_id[32];
  CHECK(cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, device));
  int memory_clock_khz = 0, bus_width_bits = 0, l2_bytes = 0;
  CHECK(cudaDeviceGetAttribute(&memory_clock_khz, cudaDevAttrMemoryClockRate, device));
  CHECK(cudaDeviceGetAttribute(&bus_width_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  CHECK(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  std::string h2d, d2h, d2d;
  for (size_t bytes : sizes) {
    void *host = nullptr, *dev_a = nullptr, *dev_b = nullptr;
    CHECK(cudaMallocHost(&host, bytes));
    std::memset(host, 1, bytes);
    CHECK(cudaMalloc(&dev_a, bytes));
    CHECK(cudaMalloc(&dev_b, bytes));
    CHECK(cudaMemset(dev_a, 0, bytes));
    CHECK(cudaMemset(dev_b, 0, bytes));
    const char *sep = h2d.empty() ? "" : ", ";
    h2d += sep + rate(bytes, static_cast<double>(bytes), iterations,
                      time_copies(dev_a, host, bytes, cudaMemcpyHostToDevice, iterations, stream));
    d2h += sep + rate(bytes, static_cast<double>(bytes), iterations,
                      time_copies(host, dev_a, bytes, cudaMemcpyDeviceToHost, iterations, stream));
    d2d += sep + rate(bytes, 2.0 * bytes, iterations,
                      time_copies(dev_b, dev_a, bytes, cudaMemcpyDeviceToDevice, iterations, stream));
    CHECK(cudaFree(dev_b));
    CHECK(cudaFree(dev_a));
    CHECK(cudaFreeHost(host));
  }
  CHECK(cudaStreamDestroy(stream));

  // Theoretical device memory bandwidth: double data rate x clock x bus width.
  const double theoretical = 2.0 * memory_clock_khz * 1000.0 * (bus_width_bits / 8.0) / kGiB;
  return "{\"index\": " + std::to_string(device) + ", \"name\": " + json_string(prop.name) +
         ", \"uuid\": \"" + uuid_text(prop.uuid) + "\", \"pci_bus_id\": " + json_string(bus_id) +
         ", \"memory_clock_khz\": " + std::to_string(memory_clock_khz) +
         ", \"memory_bus_width_bits\": " + std::to_string(bus_width_bits) +
         ", \"memory_theoretical_gib_per_s\": " + number(theoretical) +
         ", \"l2_cache_bytes\": " + std::to_string(l2_bytes) + ", \"h2d\": [" + h2d +
         "], \"d2h\": [" + d2h + "], \"d2d\": [" + d2d + "]}";
}

void enable_peer(int device, int peer) {
  CHECK(cudaSetDevice(device));
  const cudaError_t status = cudaDeviceEnablePeerAccess(peer, 0);
  if (status == cudaErrorPeerAccessAlreadyEnabled) {
    (void)cudaGetLastError();  // already on: not an error; clear it
    return;
  }
  check(status, "cudaDeviceEnablePeerAccess(peer, 0)");
}

std::string measure_peer(int from, int to, size_t bytes, int iterations) {
  int can_access = 0;
  CHECK(cudaDeviceCanAccessPeer(&can_access, from, to));
  std::string head = "{\"from\": " + std::to_string(from) + ", \"to\": " + std::to_string(to);
  if (!can_access) return head + ", \"peer_access\": false, \"gib_per_s\": null}";
  enable_peer(from, to);
  enable_peer(to, from);
  void *src = nullptr, *dst = nullptr;
  CHECK(cudaSetDevice(to));
  CHECK(cudaMalloc(&dst, bytes));
  CHECK(cudaSetDevice(from));
  CHECK(cudaMalloc(&src, bytes));
  CHECK(cudaMemset(src, 1, bytes));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const double seconds = time_on_stream(
      [&] { CHECK(cudaMemcpyPeerAsync(dst, to, src, from, bytes, stream)); }, iterations, stream);
  CHECK(cudaStreamDestroy(stream));
  CHECK(cudaFree(src));
  CHECK(cudaSetDevice(to));
  CHECK(cudaFree(dst));
  const double gib_per_s =
      seconds > 0.0 ? static_cast<double>(bytes) * iterations / seconds / kGiB : 0.0;
  return head + ", \"peer_access\": true, \"gib_per_s\": " + number(gib_per_s) + "}";
}

std::vector<size_t> parse_sizes(const char *text) {
  std::vector<size_t> sizes;
  std::string item;
  for (const char *p = text;; ++p) {
    if (*p == ',' || *p == '\0') {
      char *end = nullptr;
      const unsigned long mib = std::strtoul(item.c_str(), &end, 10);
      if (item.empty() || *end != '\0' || mib < 1 || mib > 65536) {
        fail("--sizes-mib: '" + item + "' is not a size from 1 to 65536 MiB");
      }
      sizes.push_back(static_cast<size_t>(mib) << 20);
      item.clear();
      if (*p == '\0') break;
    } else {
      item += *p;
    }
  }
  return sizes;
}

}  // namespace

int main(int argc, char **argv) {
  std::vector<size_t> sizes = parse_sizes("1,16,64,256");
  int iterations = 10;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--sizes-mib") == 0 && i + 1 < argc) {
      sizes = parse_sizes(argv[++i]);
    } else if (std::strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
      iterations = std::atoi(argv[++i]);
      if (iterations < 1 || iterations > 10000) fail("--iterations: not from 1 to 10000");
    } else {
      fail(std::string("unknown argument '") + argv[i] +
           "' (usage: --sizes-mib 1,16,64,256 --iterations 10)");
    }
  }

  int runtime = 0, driver = 0, count = 0;
  CHECK(cudaRuntimeGetVersion(&runtime));
  CHECK(cudaDriverGetVersion(&driver));
  CHECK(cudaGetDeviceCount(&count));

  std::string devices;
  for (int device = 0; device < count; ++device) {
    devices += (device ? ", " : "") + measure_device(device, sizes, iterations);
  }
  size_t largest = 0;
  for (size_t bytes : sizes) largest = bytes > largest ? bytes : largest;
  std::string peers;
  for (int from = 0; from < count; ++from) {
    for (int to = 0; to < count; ++to) {
      if (from == to) continue;
      peers += (peers.empty() ? "" : ", ") + measure_peer(from, to, largest, iterations);
    }
  }
  std::printf(
      "{\"program\": \"%s\", \"version\": %d, \"cuda_runtime\": %d, \"cuda_driver\": %d, "
      "\"iterations\": %d, \"devices\": [%s], \"p2p\": [%s]}\n",
      kProgram, kVersion, runtime, driver, iterations, devices.c_str(), peers.c_str());
  return 0;
}
