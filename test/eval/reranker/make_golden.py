"""Golden case for `m3 score`: two random-weight cross-encoders and their logits, from PyTorch.

Writes, beside this file:
  bert/   BertForSequenceClassification (`bert.*` + `bert.pooler.*` + `classifier.*`, pytorch_model.bin, vocab.txt)
  xlmr/   XLMRobertaForSequenceClassification (`roberta.*` + `classifier.dense|out_proj.*`, model.safetensors,
          a Unigram tokenizer.json)
  golden.json   per model and max_length: the pairs, their token ids and token type ids, and the logits

Independent of the TypeScript project: the encoder layers are the reference implementation's
(../../../../shared/reference/m3ref.py, plus token type embeddings, which its `embeddings` fixes at 0); the
classification heads follow transformers' BertForSequenceClassification (pooler tanh, classifier) and
RobertaClassificationHead (dense over CLS, tanh, out_proj); the pair ids are built here without the HF
`transformers` / `tokenizers` packages (not installed): a BERT basic tokenizer + greedy WordPiece, and a
Unigram Viterbi over the same vocabulary, then FlagReranker.compute_score's framing: the query cut to
max_length * 3 // 4 tokens, the passage to max_length, then prepare_for_model(truncation='only_second').

Run: /usr/bin/python3 test/eval/reranker/make_golden.py   (torch 1.13; deterministic: seeded generators)
"""
import json
import math
import os
import sys
import unicodedata

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', '..', '..', 'shared', 'reference'))
import m3ref  # noqa: E402
import weights  # noqa: E402

WORDS = ('what is a the giant panda bear species endemic to china it eats bamboo hi how do i cook rice water boil pot '
         'and of in for long cat dog run weather today sunny cold city river mountain book read write code play').split()
SUFFIXES = ['s', 'ing', 'ed', 'er']
PUNCT = ['.', ',', '?', '!']

PAIRS = [
    ['what is a panda?', 'the giant panda is a bear species endemic to china.'],
    ['what is a panda?', 'hi'],
    ['how do i cook rice in a pot of water and how long do i boil the water in the pot for the rice',
     'boil the water, cook the rice in it.'],
    ['weather today', ' '.join(['the weather in the city is sunny today and cold in the mountain by the river'] * 4)],
    ['cats playing', 'a dog played with the cats and the cat ran to the river.'],
    ['Read a BOOK', 'i read books and write code for the city.'],
]


# ----------------------------------------------------------------------------- tokenizers
def bert_vocab():
    return ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + WORDS + ['##' + s for s in SUFFIXES] + PUNCT


def bert_tokenize(text, vocab):
    """BertNormalizer (lowercase, strip accents) + BertPreTokenizer + greedy longest-first WordPiece."""
    text = unicodedata.normalize('NFD', text.lower())
    text = ''.join(c for c in text if unicodedata.category(c) != 'Mn')
    words, cur = [], ''
    for c in text:
        if c.isspace():
            if cur:
                words.append(cur)
            cur = ''
        elif unicodedata.category(c).startswith('P'):
            if cur:
                words.append(cur)
            words.append(c)
            cur = ''
        else:
            cur += c
    if cur:
        words.append(cur)
    ids = []
    for w in words:
        pieces, start = [], 0
        while start < len(w):
            end, found = len(w), None
            while end > start:
                sub = w[start:end] if start == 0 else '##' + w[start:end]
                if sub in vocab:
                    found = sub
                    break
                end -= 1
            if found is None:
                pieces = ['[UNK]']
                break
            pieces.append(found)
            start = end
        ids += [vocab.index(p) for p in pieces]
    return ids


def unigram_vocab():
    """(piece, score) list in XLM-R's order: <s> <pad> </s> <unk>, pieces, <mask>. Whole words score best."""
    v = [['<s>', 0.0], ['<pad>', 0.0], ['</s>', 0.0], ['<unk>', 0.0]]
    v += [['\u2581' + w, -3.0 - 0.013 * i] for i, w in enumerate(WORDS)]
    v += [[s, -4.5 - 0.011 * i] for i, s in enumerate(SUFFIXES)]
    v += [[p, -5.0 - 0.007 * i] for i, p in enumerate(PUNCT)]
    v += [['\u2581', -6.0]]
    v += [[chr(ord('a') + i), -9.0 - 0.017 * i] for i in range(26)]
    v += [['<mask>', 0.0]]
    return v


def unigram_tokenize(text, vocab):
    """Metaspace (spaces to U+2581, prepended) + the best-scoring segmentation (Viterbi) over the vocab."""
    s = '\u2581' + text.replace(' ', '\u2581')
    score = {p: sc for p, sc in vocab[4:-1]}
    index = {p: i for i, (p, _) in enumerate(vocab)}
    best = [0.0] + [-math.inf] * len(s)
    back = [None] * (len(s) + 1)
    for end in range(1, len(s) + 1):
        for start in range(end):
            piece = s[start:end]
            if piece in score and best[start] + score[piece] > best[end]:
                best[end], back[end] = best[start] + score[piece], start
    if back[len(s)] is None and len(s) > 0:
        raise ValueError(f'cannot segment {text!r} (every character must be in the vocabulary)')
    out, end = [], len(s)
    while end > 0:
        start = back[end]
        out.append(index[s[start:end]])
        end = start
    return out[::-1]


def pair_ids(q, p, max_length, family):
    """FlagReranker.compute_score: q[:max*3//4], p[:max], then [CLS] q [SEP] p [SEP] / <s> q </s></s> p </s>."""
    q = q[:max_length * 3 // 4]
    p = p[:max_length]
    if family == 'bert':
        cls, sep, n_special = 2, 3, 3
    else:
        cls, sep, n_special = 0, 2, 4
    excess = len(q) + len(p) + n_special - max_length
    if excess > 0:  # truncation='only_second': the passage loses its tail
        assert excess < len(p), 'the query and specials alone fill max_length'
        p = p[:len(p) - excess]
    if family == 'bert':
        return [cls] + q + [sep] + p + [sep], [0] * (len(q) + 2) + [1] * (len(p) + 1)
    return [cls] + q + [sep, sep] + p + [sep], [0] * (len(q) + len(p) + 4)


# ----------------------------------------------------------------------------- models
def embeddings(cfg, sd, ids, types, prefix):
    x = sd[prefix + 'embeddings.word_embeddings.weight'][ids]
    x = x + sd[prefix + 'embeddings.position_embeddings.weight'][m3ref.position_ids_for(cfg, ids)]
    x = x + sd[prefix + 'embeddings.token_type_embeddings.weight'][types]
    return m3ref.layer_norm(x, sd, prefix + 'embeddings.LayerNorm', cfg['layer_norm_eps'])


def logits(cfg, sd, ids, types, family):
    prefix = 'bert.' if family == 'bert' else 'roberta.'
    ids = torch.tensor([ids])
    x = embeddings(cfg, sd, ids, torch.tensor([types]), prefix)
    add_mask = torch.zeros(1, 1, 1, ids.shape[1])  # one unpadded sequence
    for i in range(cfg['num_hidden_layers']):
        p = f'{prefix}encoder.layer.{i}'
        x = m3ref.attention(cfg, sd, p + '.attention', x, x, add_mask)
        x = m3ref.ffn(cfg, sd, p, x)
    cls = x[:, 0]
    if family == 'bert':  # BertPooler (tanh) + classifier
        pooled = torch.tanh(m3ref.linear(cls, sd, 'bert.pooler.dense'))
        return m3ref.linear(pooled, sd, 'classifier')[0, 0].item()
    h = torch.tanh(m3ref.linear(cls, sd, 'classifier.dense'))  # RobertaClassificationHead
    return m3ref.linear(h, sd, 'classifier.out_proj')[0, 0].item()


def make_model(family, seed, vocab_size):
    kind = 'bert' if family == 'bert' else 'xlm-roberta'
    maxpos = 40 if family == 'bert' else 42  # XLM-R: 40 usable positions after pad_id + 1
    cfg = weights.hf_config(kind, vocab_size, 16, 2, 2, 32, maxpos)
    cfg['architectures'] = ['BertForSequenceClassification' if family == 'bert' else 'XLMRobertaForSequenceClassification']
    cfg['id2label'] = {'0': 'LABEL_0'}
    cfg['label2id'] = {'LABEL_0': 0}
    g = torch.Generator().manual_seed(seed)
    prefix = 'bert.' if family == 'bert' else 'roberta.'
    sd = weights.init_encoder(cfg, g, prefix)
    if family == 'bert':
        sd['classifier.weight'] = torch.randn(1, 16, generator=g) * 0.5
        sd['classifier.bias'] = torch.randn(1, generator=g) * 0.1
    else:
        del sd['roberta.pooler.dense.weight'], sd['roberta.pooler.dense.bias']  # add_pooling_layer=False
        sd['classifier.dense.weight'] = torch.randn(16, 16, generator=g) * 0.3
        sd['classifier.dense.bias'] = torch.randn(16, generator=g) * 0.1
        sd['classifier.out_proj.weight'] = torch.randn(1, 16, generator=g) * 0.5
        sd['classifier.out_proj.bias'] = torch.randn(1, generator=g) * 0.1
    return cfg, sd


def write_json(path, value):
    with open(path, 'w') as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write('\n')


def main():
    golden = {'tolerance': 1e-4, 'cases': []}
    for family, seed in (('bert', 11), ('xlmr', 12)):
        d = os.path.join(HERE, family)
        os.makedirs(d, exist_ok=True)
        if family == 'bert':
            vocab = bert_vocab()
            tok = lambda t: bert_tokenize(t, vocab)  # noqa: E731
            with open(os.path.join(d, 'vocab.txt'), 'w') as f:
                f.write('\n'.join(vocab) + '\n')
            write_json(os.path.join(d, 'tokenizer_config.json'), {'do_lower_case': True})
            cfg, sd = make_model(family, seed, len(vocab))
            torch.save(sd, os.path.join(d, 'pytorch_model.bin'))
        else:
            vocab = unigram_vocab()
            tok = lambda t: unigram_tokenize(t.lower(), vocab)  # noqa: E731
            specials = [(0, '<s>'), (1, '<pad>'), (2, '</s>'), (3, '<unk>'), (len(vocab) - 1, '<mask>')]
            write_json(os.path.join(d, 'tokenizer.json'), {
                'version': '1.0', 'truncation': None, 'padding': None,
                'added_tokens': [{'id': i, 'content': c, 'single_word': False, 'lstrip': c == '<mask>', 'rstrip': False,
                                  'normalized': False, 'special': True} for i, c in specials],
                'normalizer': None,
                'pre_tokenizer': {'type': 'Metaspace', 'replacement': '\u2581', 'prepend_scheme': 'always', 'split': True},
                'post_processor': None, 'decoder': None,
                'model': {'type': 'Unigram', 'unk_id': 3, 'vocab': vocab, 'byte_fallback': False},
            })
            cfg, sd = make_model(family, seed, len(vocab))
            weights.save_safetensors(os.path.join(d, 'model.safetensors'), sd)
        write_json(os.path.join(d, 'config.json'), cfg)
        usable = cfg['max_position_embeddings'] - (cfg['pad_token_id'] + 1 if family == 'xlmr' else 0)
        pairs = PAIRS if family == 'bert' else [[q.lower(), p] for q, p in PAIRS]
        for max_length in (20, 512):
            effective = min(max_length, usable)  # `--max-length` capped by the model's positions
            ids, types, out = [], [], []
            for q, p in pairs:
                i, t = pair_ids(tok(q), tok(p), effective, 'bert' if family == 'bert' else 'xlmr')
                ids.append(i)
                types.append(t)
                out.append(logits(cfg, sd, i, t, family))
            golden['cases'].append({'model': family, 'max_length': max_length, 'pairs': pairs, 'input_ids': ids,
                                    'token_type_ids': types, 'logits': out})
    write_json(os.path.join(HERE, 'golden.json'), golden)


if __name__ == '__main__':
    main()
