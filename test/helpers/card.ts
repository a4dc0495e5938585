/** A model card (README.md) split into its YAML front matter, parsed with the `yaml` package, and its body. */
import YAML from 'yaml';

export function parseCard(text: string): { front: Record<string, unknown>; body: string } {
  const m = /^---\n([\s\S]*?)\n---\n([\s\S]*)$/.exec(text);
  if (!m) throw new Error(`no YAML front matter:\n${text.slice(0, 200)}`);
  return { front: YAML.parse(m[1]), body: m[2] };
}
