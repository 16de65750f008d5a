export { Machine, Snapshot, GuestMemory, setVmPoolSize, probe, measureSyscallFloor, measureCallFloor, HOSTCALL_FIRST, HOSTCALL_LAST } from './machine'
export type {
  MachineOptions,
  OutputOption,
  RunResult,
  ExitedResult,
  SignaledResult,
  PausedResult,
  RunOptions,
  RunStats,
  TraceEvent,
  MachineState,
  LoadOptions,
  ProbeResult,
  Address,
  CallArg,
  CallArgsOf,
  CallOptions,
  HostCallContext,
  HostCallHandler,
  HostCallResult,
} from './machine'
export { Pool, RemoteMachine } from './pool'
export type { PoolOptions, PoolMachine, PoolConstructor } from './pool'
export {
  KvmboxError,
  KvmUnavailableError,
  ElfError,
  FileError,
  GuestFaultError,
  TimeoutError,
  InterruptedError,
  OutOfMemoryError,
  InvalidArgumentError,
  InvalidStateError,
  InternalError,
  HostCallError,
  GuestExitedError,
} from './errors'
export type { ErrorCode } from './errors'
