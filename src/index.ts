export { Machine, probe, measureSyscallFloor } from './machine'
export type { MachineOptions, OutputOption, RunResult, ExitedResult, SignaledResult, RunOptions, ProbeResult } from './machine'
export {
  KvmboxError,
  KvmUnavailableError,
  ElfError,
  GuestFaultError,
  TimeoutError,
  OutOfMemoryError,
  InvalidArgumentError,
  InvalidStateError,
  InternalError,
} from './errors'
export type { ErrorCode } from './errors'
