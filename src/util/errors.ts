/**
 * A problem with the user's input (file, config key, flag): printed as one line, exit code 1, no stack trace.
 * Anything else reaching the CLI is a bug and prints its stack with --debug.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** Throws a UserError unless `cond` holds. */
export function check(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new UserError(typeof message === 'string' ? message : message());
}
