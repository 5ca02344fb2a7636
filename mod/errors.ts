/**
 * Error types shared by the API server, the typed client and the CLI.
 *
 * Every error carries a stable machine-readable `code` (the same strings appear in
 * API error bodies) and maps to one HTTP status and one CLI exit code.
 * @module
 */

/** Stable error codes. Scripts may match on these; never rename one. */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "FAILED_PRECONDITION"
  | "CONFLICT"
  | "RESOURCE_EXHAUSTED"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "UNAVAILABLE"
  | "INTERNAL";

/** HTTP status for each code. */
export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  INVALID_ARGUMENT: 400,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  CONFLICT: 409,
  FAILED_PRECONDITION: 412,
  RESOURCE_EXHAUSTED: 507,
  INTERNAL: 500,
  UNAVAILABLE: 503,
};

/** JSON body of every API error response. */
export interface ApiErrorBody {
  error: {
    code: ErrorCode;
    message: string;
    /** Optional structured detail, e.g. the offending field. */
    details?: Record<string, unknown>;
  };
}

/** Base class of all Ballast errors. */
export class BallastError extends Error {
  override name = "BallastError";
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;
  readonly #status?: number;

  /**
   * `options.status` refines the code's HTTP status where HTTP has a more precise one
   * (INVALID_ARGUMENT as 405, 413 or 415); the code stays what clients match on.
   */
  constructor(
    code: ErrorCode,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown>; status?: number },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options?.details;
    this.#status = options?.status;
  }

  /** HTTP status for this error. */
  get status(): number {
    return this.#status ?? HTTP_STATUS[this.code];
  }

  /** The API error body for this error. */
  toBody(): ApiErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.details ? { details: this.details } : {}),
      },
    };
  }
}

/** A request parameter or body field is malformed. */
export class InvalidArgumentError extends BallastError {
  override name = "InvalidArgumentError";
  constructor(message: string, options?: { cause?: unknown; field?: string }) {
    super("INVALID_ARGUMENT", message, {
      cause: options?.cause,
      details: options?.field ? { field: options.field } : undefined,
    });
  }
}

/** A named resource does not exist. */
export class NotFoundError extends BallastError {
  override name = "NotFoundError";
  constructor(readonly kind: string, readonly resource: string) {
    super("NOT_FOUND", `${kind} "${resource}" not found`, { details: { kind, name: resource } });
  }
}

/** A resource with that name already exists. */
export class AlreadyExistsError extends BallastError {
  override name = "AlreadyExistsError";
  constructor(readonly kind: string, readonly resource: string) {
    super("ALREADY_EXISTS", `${kind} "${resource}" already exists`, {
      details: { kind, name: resource },
    });
  }
}

/** The operation is valid but the system is not in a state that allows it. */
export class FailedPreconditionError extends BallastError {
  override name = "FailedPreconditionError";
  constructor(message: string, details?: Record<string, unknown>) {
    super("FAILED_PRECONDITION", message, { details });
  }
}

/** A compare-and-swap lost a race; retry from fresh state. */
export class ConflictError extends BallastError {
  override name = "ConflictError";
  constructor(message: string, details?: Record<string, unknown>) {
    super("CONFLICT", message, { details });
  }
}

/** Out of disk, capacity or another finite resource. */
export class ResourceExhaustedError extends BallastError {
  override name = "ResourceExhaustedError";
  constructor(message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super("RESOURCE_EXHAUSTED", message, options);
  }
}

/** A dependency (control plane, peer) cannot be reached right now. */
export class UnavailableError extends BallastError {
  override name = "UnavailableError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("UNAVAILABLE", message, options);
  }
}

/**
 * The message of anything thrown, for error messages and `reason` log fields. Log an
 * unexpected error itself as `{ err }` instead: pino's err serializer keeps its type,
 * stack and causes.
 */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The JSON type name of a value, for error messages ("null", "array", "string", ...). */
export function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

/** Wraps anything unexpected so callers always see a BallastError. */
export function toBallastError(err: unknown): BallastError {
  if (err instanceof BallastError) return err;
  return new BallastError("INTERNAL", errorMessage(err), { cause: err });
}

/** Rebuilds a typed error from an API error body (used by the client). */
export function fromErrorBody(body: ApiErrorBody, httpStatus: number): BallastError {
  const code = body?.error?.code;
  const message = body?.error?.message ?? `HTTP ${httpStatus}`;
  if (code && code in HTTP_STATUS) {
    return new BallastError(code, message, { details: body.error.details });
  }
  return new BallastError(httpStatus >= 500 ? "INTERNAL" : "INVALID_ARGUMENT", message);
}
