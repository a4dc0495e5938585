import { parseModes } from '../../src/eval/beir';
import { colbertScore, fuseScores, lexicalScore, modeNamed } from '../../src/model/scores';

describe('compute_score fusion', () => {
  // FlagEmbedding README (research/BGE_M3, "Usage"): components and fused scores of BAAI/bge-m3 for four
  // pairs with weights [0.4, 0.2, 0.4] (quoted in shared/data/README.md §5.1).
  const colbert = [0.7796499729156494, 0.4621465802192688, 0.4523794651031494, 0.7898575067520142];
  const sparse = [0.195556640625, 0.00879669189453125, 0.0, 0.1802978515625];
  const dense = [0.6259765625, 0.347412109375, 0.349853515625, 0.67822265625];
  const sd = [0.482503205537796, 0.23454029858112335, 0.2332356721162796, 0.5122477412223816];
  const all = [0.6013619303703308, 0.3255828022956848, 0.32089319825172424, 0.6232916116714478];
  test.each([0, 1, 2, 3])('pair %i matches the published fused scores', (i) => {
    const s = fuseScores(dense[i], sparse[i], colbert[i], [0.4, 0.2, 0.4]);
    expect(s['dense+sparse']).toBeCloseTo(sd[i], 6);
    expect(s.all).toBeCloseTo(all[i], 6);
  });

  test('lexical score sums products over shared ids only', () => {
    expect(lexicalScore({ '5': 0.5, '9': 0.25 }, { '9': 2, '11': 3 })).toBeCloseTo(0.5);
    expect(lexicalScore({ '5': 0.5 }, { '6': 1 })).toBe(0);
  });

  test('colbert score is the mean over query vectors of the best match', () => {
    const q = [new Float32Array([1, 0]), new Float32Array([0, 1])];
    const p = [new Float32Array([1, 0]), new Float32Array([0.6, 0.8])];
    expect(colbertScore(q, p)).toBeCloseTo((1 + 0.8) / 2);
  });
});

test("FlagEmbedding's compute_score mode names are aliases of ours", () => {
  expect(modeNamed('sparse+dense')).toBe('dense+sparse');
  expect(modeNamed('colbert+sparse+dense')).toBe('all');
  expect(modeNamed('all')).toBe('all');
  expect(modeNamed('dense+colbert')).toBeNull();
  expect(parseModes('dense,sparse+dense,colbert+sparse+dense')).toEqual(['dense', 'dense+sparse', 'all']);
});
