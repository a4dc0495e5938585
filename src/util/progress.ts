/**
 * A progress bar on stderr with rate and ETA (stdout stays for results). Redrawn in place on a TTY
 * (or with M3_PROGRESS=1); otherwise a plain line at most every 10 s, so logs stay readable.
 * M3_PROGRESS=0 silences it.
 */
export class Progress {
  private readonly start = Date.now();
  private last = 0;
  private current = 0;
  private extra = '';
  private drawn = false;
  private readonly tty: boolean;
  private readonly quiet: boolean;

  /** `shown` false: a bar that draws nothing (ranks other than 0 of a data-parallel run). */
  constructor(private readonly label: string, private readonly total: number, private readonly unit = 'it', shown = true) {
    this.tty = process.env.M3_PROGRESS === '1' || (!!process.stderr.isTTY && process.env.M3_PROGRESS !== '0');
    this.quiet = process.env.M3_PROGRESS === '0' || !shown;
  }

  /** Sets the absolute position; `extra` is shown after the rate (e.g. "loss 1.23 lr 1e-5"). */
  update(done: number, extra?: string): void {
    this.current = done;
    if (extra !== undefined) this.extra = extra;
    const now = Date.now();
    // nothing for work that ends within a second; then at most 10 redraws/s (a TTY) or a line per 10 s
    if (this.quiet || now - this.start < 1000 || now - this.last < (this.tty ? 100 : 10000)) return;
    this.last = now;
    this.draw(now);
  }

  tick(n = 1, extra?: string): void {
    this.update(this.current + n, extra);
  }

  done(extra?: string): void {
    if (extra !== undefined) this.extra = extra;
    if (this.quiet || !this.drawn) return;
    this.draw(Date.now());
    if (this.tty) process.stderr.write('\n');
  }

  private draw(now: number): void {
    this.drawn = true;
    const secs = Math.max((now - this.start) / 1000, 1e-3);
    const rate = this.current / secs;
    const frac = this.total > 0 ? Math.min(this.current / this.total, 1) : 0;
    const eta = rate > 0 && this.total > 0 ? (this.total - this.current) / rate : NaN;
    const width = 24;
    const bar = '█'.repeat(Math.round(frac * width)).padEnd(width, '░');
    const line = `${this.label} ${bar} ${this.current}/${this.total} ${formatRate(rate)} ${this.unit}/s ETA ${formatSecs(eta)}${this.extra ? ' ' + this.extra : ''}`;
    process.stderr.write(this.tty ? `\r\x1b[K${line}` : line + '\n');
  }
}

function formatRate(r: number): string {
  return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);
}

export function formatSecs(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}` : `${m}:${String(sec).padStart(2, '0')}`;
}
