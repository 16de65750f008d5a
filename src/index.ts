export type { ErrorCode } from './errors'
export {
  DeadlockError,
  ElfError,
  FileError,
  GuestExitedError,
  GuestFaultError,
  HostCallError,
  InternalError,
  InterruptedError,
  InvalidArgumentError,
  InvalidStateError,
  KvmboxError,
  KvmUnavailableError,
  OutOfMemoryError,
  TimeoutError,
} from './errors'
export type {
  Address,
  CallArg,
  CallArgsOf,
  CallOptions,
  ExitedResult,
  HostCallContext,
  HostCallHandler,
  HostCallResult,
  LoadOptions,
  MachineOptions,
  MachineState,
  OutputOption,
  PausedResult,
  ProbeResult,
  RunOptions,
  RunResult,
  RunStats,
  SignaledResult,
  TraceEvent,
} from './machine'
export { GuestMemory, HOSTCALL_FIRST, HOSTCALL_LAST, Machine, measureCallFloor, measureSyscallFloor, probe, Snapshot, setVmPoolSize } from './machine'
export type { PoolConstructor, PoolMachine, PoolOptions } from './pool'
export { Pool, RemoteMachine } from './pool'
