// Stand-in for NCCL (tests/cuda_emu/emu_nccl.cpp): the subset of NCCL 2.x's API that
// engine/dist/nccl_communicator.cpp uses, with NCCL's names, types, enum values and
// contracts, between the emulated GPUs of separate processes (one rank per process,
// started by mpirun) over POSIX shared memory named by the unique id. No MPI.
//
// What it checks that NCCL leaves to the user (NCCL would hang or mix data):
// every rank calls the same collective with the same count, dtype, op and root at
// the same position in the communicator's sequence; buffers are device memory of the
// communicator's device and hold the counted elements; ranks and nranks agree at
// init; a communicator is not used after ncclCommDestroy/ncclCommAbort. A misuse
// returns ncclInvalidUsage / ncclInvalidArgument on every rank of the collective,
// prints "nccl_emu: ..." and is what ncclGetLastError returns; the communicator is
// then failed (ncclCommGetAsyncError). A rank that does not arrive within
// BET_NCCL_EMU_TIMEOUT seconds (else BET_COMM_TIMEOUT, else 60), or that exits or
// destroys/aborts its communicator instead, fails the collective with ncclRemoteError
// naming it, on every rank that did arrive. Ranks share one host (shared memory).
//
// Streams: the emulated runtime completes every call before it returns (one implicit
// stream), so a collective runs when it is enqueued, in the order of the calls, and
// returns once this rank's output is written; stream and event arguments are
// accepted and ordered trivially. A program that relies on NCCL calls not blocking
// the host (rank 0 enqueues a collective and then waits for a host message that rank
// 1 sends before its own collective) fails here by timeout; on a GPU it works.
#pragma once
#include <cstddef>

#include "cuda_runtime.h"

#define NCCL_MAJOR 2
#define NCCL_MINOR 28
#define NCCL_PATCH 0
#define NCCL_SUFFIX "-emu"
#define NCCL_VERSION_CODE 22800
#define NCCL_VERSION(X, Y, Z) (((X) <= 2 && (Y) <= 8) ? (X) * 1000 + (Y) * 100 + (Z) : (X) * 10000 + (Y) * 100 + (Z))

extern "C" {

typedef struct ncclComm* ncclComm_t;
#define NCCL_COMM_NULL NULL

#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef enum {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7,
  ncclNumResults = 8
} ncclResult_t;

typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4, ncclNumOps = 5 } ncclRedOp_t;

typedef enum {
  ncclInt8 = 0, ncclChar = 0,
  ncclUint8 = 1,
  ncclInt32 = 2, ncclInt = 2,
  ncclUint32 = 3,
  ncclInt64 = 4,
  ncclUint64 = 5,
  ncclFloat16 = 6, ncclHalf = 6,
  ncclFloat32 = 7, ncclFloat = 7,
  ncclFloat64 = 8, ncclDouble = 8,
  ncclBfloat16 = 9,
  ncclFloat8e4m3 = 10,
  ncclFloat8e5m2 = 11,
  ncclNumTypes = 12
} ncclDataType_t;

ncclResult_t ncclGetVersion(int* version);
ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId);
// Collective over the nranks processes given the same id: returns once all arrived.
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
// Also tells the peers: their pending and later collectives fail with ncclRemoteError.
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError);
ncclResult_t ncclCommCount(const ncclComm_t comm, int* count);
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device);
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank);
const char* ncclGetErrorString(ncclResult_t result);
// The last error's message on `comm` (or this thread's last, for a null comm).
const char* ncclGetLastError(ncclComm_t comm);

// Reductions: f32, f64, i32, u32, i64, u64, i8, u8 (the stand-in does not reduce
// f16/bf16/fp8: ncclInvalidArgument). Gathers and broadcasts move any type.
ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream);

// Groups nest; the collectives inside run as they are called (every rank calls them
// in the same order, so nothing waits on a later call of the group), and the first
// error of the group is returned again by the outermost ncclGroupEnd.
ncclResult_t ncclGroupStart();
ncclResult_t ncclGroupEnd();

}  // extern "C"

// Not NCCL: cudaEventQuery, which the emulated runtime (include/cuda_runtime.h) lacks
// and NCCL's users poll with. Every emulated call has completed when it returns, so a
// recorded event is always complete (cudaSuccess). cudaErrorNotReady keeps CUDA's value.
// (Belongs in cuda_runtime.h / emu_runtime.cpp; here until the runtime has it.)
constexpr cudaError_t cudaErrorNotReady = cudaError_t(600);
cudaError_t cudaEventQuery(cudaEvent_t event);
