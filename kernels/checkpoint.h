/* checkpoint.h -- a Hugging Face GPT-2 directory on disk: config.json plus safetensors (one file or shards), mmap-ed and checked.
 *
 * Nothing in the files is trusted: every header length, dtype, shape and byte
 * range is checked against the file before a pointer into it is handed out.
 * Backends read the tensors from here and copy them into their own layout;
 * the checkpoint can be closed once the backend has its copy. */
#ifndef LLMCGI_CHECKPOINT_H
#define LLMCGI_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The element types llmcgi computes from. Other safetensors dtypes are
 * parsed (so the error can name them) but refused for model tensors. */
enum ckpt_dtype { CKPT_F32, CKPT_F16, CKPT_BF16 };

/* "F32", "F16", "BF16". */
const char *ckpt_dtype_name(enum ckpt_dtype t);
size_t ckpt_dtype_size(enum ckpt_dtype t);

/* The MLP's activation, as config.json's activation_function names it. */
enum ckpt_act {
    CKPT_ACT_GELU_TANH,           /* gelu_new, gelu_pytorch_tanh */
    CKPT_ACT_GELU_ERF,            /* gelu */
    CKPT_ACT_RELU,                /* relu */
    CKPT_ACT_QUICK_GELU,          /* quick_gelu */
};

/* How a classifier's logits become scores, as config.json's problem_type
 * says (Hugging Face's text-classification pipeline picks its function from
 * it: see classify.h). */
enum ckpt_problem {
    CKPT_PROBLEM_NONE,            /* null or absent */
    CKPT_PROBLEM_SINGLE,          /* single_label_classification: softmax */
    CKPT_PROBLEM_MULTI,           /* multi_label_classification: sigmoid per label */
    CKPT_PROBLEM_REGRESSION,      /* regression: the raw logits */
};

/* What config.json says, with Hugging Face's defaults for keys left out. */
struct gpt2_config {
    char model_type[32];          /* "gpt2" */
    char architecture[64];        /* architectures[0], e.g. "GPT2LMHeadModel" ("" when absent) */
    int n_layer, n_head, n_embd;
    int n_positions;              /* n_positions (or n_ctx in old files) */
    int n_inner;                  /* MLP width; 4 * n_embd when null */
    int vocab_size;
    float layer_norm_epsilon;     /* 1e-5 */
    char activation[32];          /* "gelu_new" (also "gelu_pytorch_tanh", "gelu", "relu", "quick_gelu") */
    enum ckpt_act act;            /* what that name means (the only names accepted) */
    bool tie_word_embeddings;     /* true: the LM head is wte */
    bool scale_attn_weights;      /* true: scores / sqrt(head_dim) */
    bool scale_attn_by_inverse_layer_idx; /* false: also / (layer + 1) */
    int bos_token_id, eos_token_id;   /* 50256; -1 when null */
    /* GPT2ForSequenceClassification (architectures[0]): a score head
     * [num_labels, n_embd] instead of the LM head. */
    bool classifier;
    int num_labels;               /* classifiers: len(id2label), else num_labels, else 2; 0 otherwise */
    enum ckpt_problem problem;    /* classifiers: problem_type */
    int pad_token_id;             /* -1 when null or absent */
};

/* One tensor: a pointer into the mapping, its type and shape. data is always
 * aligned to its element size (a tensor a file leaves misaligned is copied). */
struct ckpt_tensor {
    const void *data;             /* NULL when absent (only lm_head may be) */
    enum ckpt_dtype dtype;
    int ndim;
    int64_t shape[4];
    size_t nbytes;                /* product(shape) * dtype size, checked against the file */
};

/* A block's tensors in Hugging Face's Conv1D layout: weight [in, out]. */
struct gpt2_layer_tensors {
    struct ckpt_tensor ln_1_w, ln_1_b;        /* [C] */
    struct ckpt_tensor c_attn_w, c_attn_b;    /* [C, 3C], [3C] */
    struct ckpt_tensor c_proj_w, c_proj_b;    /* [C, C], [C] */
    struct ckpt_tensor ln_2_w, ln_2_b;        /* [C] */
    struct ckpt_tensor c_fc_w, c_fc_b;        /* [C, n_inner], [n_inner] */
    struct ckpt_tensor mlp_proj_w, mlp_proj_b;/* [n_inner, C], [C] */
};

struct gpt2_checkpoint {
    char *dir;                    /* the directory, as given */
    struct gpt2_config cfg;
    struct ckpt_tensor wte;       /* [vocab, C] */
    struct ckpt_tensor wpe;       /* [n_positions, C] */
    struct ckpt_tensor ln_f_w, ln_f_b;
    struct ckpt_tensor lm_head;   /* [vocab, C]; equals wte when tied; absent (data NULL) for a classifier */
    struct ckpt_tensor score;     /* classifiers: score.weight [num_labels, C] (nn.Linear, no bias); else absent */
    char **labels;                /* classifiers: id2label, num_labels strings; owned (a caller may take them
                                   * over: set to NULL, free with ckpt_labels_free) */
    struct gpt2_layer_tensors *layers;   /* n_layer of them */
    size_t weight_bytes;          /* bytes of all model tensors above (lm_head counted once when tied) */
    void *priv;                   /* the mappings; owned */
};

/* Opens the model directory `dir`: reads config.json, maps model.safetensors
 * or the shards named by model.safetensors.index.json, and finds and checks
 * every tensor (names with or without the "transformer." prefix; attn.bias /
 * attn.masked_bias buffers and other extra tensors are ignored).
 * On success *out is a new checkpoint (the caller frees it with
 * gpt2_checkpoint_close) and 0 is returned. A GPT2ForSequenceClassification
 * directory has score.weight and its labels instead of an LM head. On failure returns -1 and writes
 * a message naming the file (and the tensor or key) into err. */
int gpt2_checkpoint_open(const char *dir, struct gpt2_checkpoint **out, char *err, size_t errlen);

/* Frees n labels and the array (NULL is fine). */
void ckpt_labels_free(char **labels, int n);

/* Unmaps the files and frees ck (NULL is fine). Pointers from it die with it. */
void gpt2_checkpoint_close(struct gpt2_checkpoint *ck);

/* Reads config.json alone (also used to refuse other architectures early).
 * Returns 0, or -1 with a message naming the file and key in err. */
int gpt2_config_load(const char *path, struct gpt2_config *cfg, char *err, size_t errlen);

/* Says a backend has its own copy of t: the pages of t's mapping leave this
 * process's resident set (they stay in the page cache), so loading a model
 * does not hold the file and the copy in memory at once. t stays readable
 * (its pages fault back in from the file). Aligned heap copies are left alone. */
void ckpt_tensor_done(const struct gpt2_checkpoint *ck, const struct ckpt_tensor *t);

/* Converts element i of tensor t to float. */
float ckpt_get(const struct ckpt_tensor *t, size_t i);

/* What a backend was asked to keep the matrices in (llm.h's llm_dtype, with
 * auto resolved per backend). */
enum ckpt_pick {
    CKPT_PICK_FILE,     /* the file's type when every matrix shares one, else F32 */
    CKPT_PICK_HALF,     /* a F16/BF16 file's type; else F16 when every matrix value fits F16, else BF16 */
    CKPT_PICK_F32,
    CKPT_PICK_F16,      /* refused when a matrix value is beyond F16's range */
    CKPT_PICK_BF16,
};

/* The type a backend keeps the matrices (wte, lm_head, score, each layer's
 * four) in, as `pick` asks: *out set and 0 returned, or -1 with err (ck->dir,
 * the tensor and the value that does not fit F16). Reads every matrix value
 * once when F16 is asked of a file that is not F16 already. */
int ckpt_matrix_dtype(const struct gpt2_checkpoint *ck, enum ckpt_pick pick, enum ckpt_dtype *out, char *err,
                      size_t errlen);

/* Whether every value of t stays finite in F16 (ckpt_f32_to_f16 of a value
 * beyond +-65519 is infinite); when not, *bad (may be NULL) is the first
 * element that does not. Infinite or NaN values in t count as fitting: they
 * are what they were. */
bool ckpt_fits_f16(const struct ckpt_tensor *t, size_t *bad);

/* Half-precision conversions shared by the backends (round to nearest even). */
float ckpt_f16_to_f32(uint16_t h);
float ckpt_bf16_to_f32(uint16_t h);
uint16_t ckpt_f32_to_f16(float f);
uint16_t ckpt_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif

#endif
