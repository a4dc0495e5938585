/**
 * How every command ends: results on stdout, notices on stderr; a UserError is one line and exit 1,
 * anything else is a bug reported in one line (the stack only with --debug).
 */
import { UserError } from '../util/errors';
import { useBackend } from '../backend';

export interface CommonArgs {
  backend?: string;
  device?: string;
  debug?: boolean;
}

export function reportError(e: unknown, debug: boolean): number {
  if (e instanceof UserError) {
    process.stderr.write(`m3: error: ${e.message}\n`);
    if (debug && e.stack) process.stderr.write(e.stack + '\n');
    return 1;
  }
  const err = e as Error;
  process.stderr.write(`m3: internal error: ${err?.message?.split('\n')[0] ?? String(e)}${debug ? '' : ' (run with --debug for the stack trace)'}\n`);
  if (debug && err?.stack) process.stderr.write(err.stack + '\n');
  return 2;
}

/** Wraps a command handler: picks the backend when asked to, maps errors to exit codes. */
export function handler<A extends CommonArgs>(fn: (args: A) => Promise<void> | void, opts: { backend?: boolean } = {}) {
  return async (args: A): Promise<void> => {
    try {
      if (opts.backend) await useBackend(args.backend, (args.device ?? 'cpu') as 'cpu' | 'cuda');
      await fn(args);
    } catch (e) {
      process.exitCode = reportError(e, !!args.debug);
    }
  };
}

/** Writes one JSON document as the whole of stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
