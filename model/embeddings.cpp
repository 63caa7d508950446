#include "model/embeddings.h"

#include <cmath>
#include <vector>

#include "model/martingale_attention.h"

namespace bet::model {

Embedding::Embedding(int64_t num_, int64_t dim_, Generator& g, DType dtype) : num(num_), dim(dim_) {
  weight = Tensor::empty({num, dim}, dtype);
  init_normal(weight, g, 0.0, 0.02);
  register_parameter("weight", weight);
}

Tensor sinusoidal_table(int64_t max_len, int64_t d, DType dtype) {
  std::vector<double> pe(size_t(max_len * d));
  for (int64_t t = 0; t < max_len; ++t)
    for (int64_t j = 0; j < d; ++j) {
      const int64_t i2 = j - (j % 2);  // 2i for both members of the pair
      const double angle = double(t) / std::pow(10000.0, double(i2) / double(d));
      pe[size_t(t * d + j)] = (j % 2 == 0) ? std::sin(angle) : std::cos(angle);
    }
  return Tensor::from_vector<double>(pe, {max_len, d}).to(dtype);
}

Tensor embed_inputs(const Embedding& embed, const Tensor& ids, PosEncoding pe, const Embedding* pos,
                    const Tensor& sin_table, double dropout, const SeqContext& ctx) {
  BET_CHECK(ids.dim() == 2, "embed: ids must be [B, S], got ", shape_str(ids.shape()));
  const int64_t S = ids.size(1);
  Tensor x = embed.forward(ids);
  if (pe == PosEncoding::Sinusoidal) {
    BET_CHECK(sin_table.defined() && S <= sin_table.size(0), "embed: sequence length ", S,
              " exceeds the sinusoidal table (max_len ", sin_table.defined() ? sin_table.size(0) : 0, ")");
    x = add(x, slice(sin_table, 0, 0, S));
  } else if (pe == PosEncoding::Learned) {
    BET_CHECK(pos != nullptr && S <= pos->num, "embed: sequence length ", S, " exceeds max_len ",
              pos ? pos->num : 0);
    x = add(x, slice(pos->weight, 0, 0, S));
  }
  return site_dropout(x, dropout, ctx);
}

}  // namespace bet::model
