/**
 * What every control-plane package shares and nothing else: logging, the clock, listen
 * addresses, abortable sleeps and this process's version report. It imports no other control package.
 * @module
 */

export { formatHostPort, isLoopback, type ListenAddress, parseListen } from "./address.ts";
export { type Clock, FakeClock, systemClock } from "./clock.ts";
export {
  createLogger,
  LOG_LEVELS,
  type LogFormat,
  type Logger,
  type LogLevel,
  silentLogger,
} from "./log.ts";
export { abortableSleep } from "./sleep.ts";
export { versionInfo } from "./version_info.ts";
