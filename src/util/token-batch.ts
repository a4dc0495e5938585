/**
 * A padded batch of token ids: the one shape that the tokenizer, the data reader, the encoder and the
 * losses all pass around. Row-major [batch, length]; attention mask 1 for tokens, 0 for padding.
 */
export interface TokenBatch {
  inputIds: Int32Array;
  attentionMask: Int32Array;
  batch: number;
  length: number;
}
