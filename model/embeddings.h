// Token embeddings and the additive positional encodings (model.md, "Model"). RoPE is
// not here: it rotates q and k inside attention.
#pragma once
#include <cstdint>

#include "model/config.h"
#include "model/context.h"
#include "model/module.h"

namespace bet::model {

// Embedding(num, dim): weight [num, dim], N(0, 0.02) as model.md initialises both the
// token table (`embed.weight`) and the learned positions (`pos.weight`).
class Embedding : public Module {
 public:
  Embedding(int64_t num, int64_t dim, Generator& g, DType dtype = DType::F32);
  Tensor forward(const Tensor& ids) const { return embedding(weight, ids); }
  Tensor weight;
  int64_t num, dim;
};

// PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)): [max_len, D].
Tensor sinusoidal_table(int64_t max_len, int64_t d, DType dtype = DType::F32);

// embed(ids) + positional encoding (sinusoidal: `sin_table`; learned: `pos`), then the
// embedding dropout site. ids [B, S] -> [B, S, D]. `pos` and `sin_table` may be null /
// undefined when the mode does not use them.
Tensor embed_inputs(const Embedding& embed, const Tensor& ids, PosEncoding pe, const Embedding* pos,
                    const Tensor& sin_table, double dropout, const SeqContext& ctx);

}  // namespace bet::model
