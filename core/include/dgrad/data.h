/* dgrad/data.h - datasets (torch.utils.data.Dataset: a length and a way to
 * get sample i), IDX files (MNIST's format) and CSV files as datasets, a
 * distributed sampler and a batch loader.
 *
 * The IDX reader takes plain or gzip-compressed files (zlib) and validates
 * everything: magic number, element type, dims, sizes against the file
 * length. Errors are one-line messages naming the file.
 */
#ifndef DGRAD_DATA_H
#define DGRAD_DATA_H

#include "dgrad/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- IDX -------------------------------------------------------------- */

/* A decoded IDX file: unsigned-byte elements (type 0x08), the only type
 * MNIST uses; other types are rejected with a message. */
typedef struct {
    int ndim;                    /* 1..DG_MAX_DIMS */
    int64_t dims[DG_MAX_DIMS];
    uint8_t *data;               /* prod(dims) bytes, owned */
} dg_idx;

/* Read path (".gz" or plain, detected by the gzip magic bytes, not the
 * name). DG_ERR and a message naming the file when it is missing,
 * truncated, corrupt, has a bad magic number or an unsupported type. */
dg_status dg_idx_read(const char *path, dg_idx *out);
void dg_idx_free(dg_idx *idx);

/* ---- datasets ---------------------------------------------------------
 * A dataset is n samples, each a float tensor of sample_shape and an int32
 * class label in [0, num_classes). Its samples come from one of three
 * places, tried in this order:
 *   get       your function (any storage, any transform): the custom case;
 *   features  n * sample_size floats in memory (CSV files load this way);
 *   images    n * sample_size uint8 pixels in memory (IDX files), turned
 *             into floats by the loader's scale and shift (ToTensor by
 *             default).
 * A custom dataset: zero the struct, set n, ndim_sample, sample_shape,
 * sample_size (= the product of sample_shape), num_classes, get and user
 * (and release, called by dg_dataset_free); dg_dataset_check tells what
 * is missing. */
typedef struct dg_dataset dg_dataset;
struct dg_dataset {
    int64_t n;
    int64_t sample_size;          /* floats per sample, e.g. 784 */
    int ndim_sample;              /* e.g. 2 for 28x28 */
    int64_t sample_shape[DG_MAX_DIMS - 1];
    int num_classes;
    uint8_t *images;              /* n * sample_size, owned, or NULL */
    int32_t *labels;              /* n, owned (with images or features) */
    float *features;              /* n * sample_size, owned, or NULL */
    /* Writes sample i (0 <= i < n) into x (sample_size floats) and its
     * label into *y; DG_ERR with a message (dg_set_error) on failure. It
     * may be called from the loader's thread only, in any order. */
    dg_status (*get)(const dg_dataset *ds, int64_t i, float *x, int32_t *y);
    void *user;                   /* for get */
    void (*release)(void *user);  /* optional: frees user in dg_dataset_free */
    const char *name;             /* optional, for messages; not owned (the CSV
                                     loader points it at its path argument) */
};

/* DG_OK if ds is usable: n >= 1, a source, sample_size the product of
 * sample_shape (1 <= ndim_sample < DG_MAX_DIMS), num_classes >= 1; else a
 * one-line message naming the dataset and the field. */
dg_status dg_dataset_check(const dg_dataset *ds);

/* Sample i as floats (x: sample_size) and its label, from whichever source
 * ds has (images as pixel / 255). A label outside [0, num_classes) is an
 * error naming the dataset, the index and the label. */
dg_status dg_dataset_get(const dg_dataset *ds, int64_t i, float *x, int32_t *y);

/* Load an images IDX and a labels IDX (any mix of plain and gzip).
 * Errors: counts that disagree, labels >= num_classes, wrong dims. */
dg_status dg_dataset_load_idx(const char *images_path, const char *labels_path,
                              int num_classes, dg_dataset *out);
/* Load MNIST-style data from dir: train-images-idx3-ubyte(.gz) etc.
 * train selects the training split (else t10k). */
dg_status dg_dataset_load_mnist(const char *dir, bool train, dg_dataset *out);

/* Load a CSV file (plain or gzip) of one sample per line: the label in
 * column label_col (0-based), the features in the other columns, as
 * numbers. An optional first line that does not parse as numbers is taken
 * as a header. The features are reshaped to sample_shape (ndim_sample
 * dims; ndim_sample 0 means one dim of all the features) and every row
 * must have the same number of columns. Errors name the file, the line
 * and the column: a row of another width, a field that is not a finite
 * number, a label that is not an integer in [0, num_classes). */
dg_status dg_dataset_load_csv(const char *path, int label_col, int num_classes, int ndim_sample,
                              const int64_t *sample_shape, dg_dataset *out);
/* Frees what the dataset owns (and calls release); zeroes it. */
void dg_dataset_free(dg_dataset *ds);

/* ---- sampler (torch.utils.data.DistributedSampler semantics) --------- */

typedef struct {
    int64_t dataset_size;
    int rank, world_size;        /* 0, 1 for a single process */
    bool shuffle;
    uint64_t seed;
    bool drop_last;              /* false: pad by repeating the first
                                    indices so every rank gets as many;
                                    true: drop the tail so it divides */
    int64_t epoch;               /* set with dg_sampler_set_epoch */
    int64_t num_samples;         /* per rank */
    int64_t total_size;          /* num_samples * world_size */
    int64_t *indices;            /* this rank's num_samples indices, owned */
    int64_t *perm;               /* scratch: the dataset_size permutation, owned */
} dg_sampler;

/* DG_ERR and a message for dataset_size < 1, world_size < 1 or rank
 * outside [0, world_size). On error *s is zeroed (dg_sampler_free is safe).
 * Computes epoch 0. */
dg_status dg_sampler_init(dg_sampler *s, int64_t dataset_size, int rank, int world_size,
                          bool shuffle, uint64_t seed, bool drop_last);
/* Evaluation split: rank r takes indices r, r + world_size, ... (no
 * shuffle, no padding), so the ranks together cover every sample exactly
 * once; their counts differ by at most one. Reduce the per-rank counts. */
dg_status dg_sampler_init_eval(dg_sampler *s, int64_t dataset_size, int rank, int world_size);
/* Recompute this rank's indices for epoch: the permutation depends only on
 * (seed, epoch), so every rank agrees and each gets a disjoint share. */
void dg_sampler_set_epoch(dg_sampler *s, int64_t epoch);
void dg_sampler_free(dg_sampler *s);

/* ---- loader ----------------------------------------------------------- */

typedef struct {
    const dg_dataset *ds;
    dg_sampler *sampler;          /* not owned */
    int64_t batch_size;
    bool drop_last;               /* drop a last partial batch */
    float scale, shift;           /* pixel -> (pixel * scale + shift);
                                     ToTensor() is scale 1/255, shift 0 */
    int64_t pos;                  /* position within the epoch, in samples */
    float *xbuf;                  /* host staging for dg_loader_next, owned */
    int32_t *ybuf;
    int64_t buf_rows;             /* samples xbuf/ybuf hold */
    /* internal: pinned staging for a device context, made by the first
     * dg_loader_next on one: two slots (x then y) used in turn, each with
     * the event of the upload that last read it */
    void *pin[2];
    void *pin_ev[2];
    int pin_next;
    int pin_device;               /* dg_device of pin[], valid when pin[0] */
} dg_loader;

/* The sampler must cover ds (same dataset_size), and ds must pass
 * dg_dataset_check. Allocates the staging
 * buffers once; dg_loader_next/next_host never allocate host memory.
 * Release with dg_loader_free. On error *l is zeroed. */
dg_status dg_loader_init(dg_loader *l, const dg_dataset *ds, dg_sampler *sampler,
                         int64_t batch_size, bool drop_last);
void dg_loader_free(dg_loader *l);
/* Number of batches per epoch. */
int64_t dg_loader_num_batches(const dg_loader *l);
/* Start an epoch (sets the sampler's epoch, rewinds). */
void dg_loader_start_epoch(dg_loader *l, int64_t epoch);
/* Fill host buffers with the next batch: x (B * sample_size floats),
 * y (B labels). Returns B, or 0 at the end of the epoch, or -1 with the
 * message set (dg_dataset_get failed: a custom get, or a label out of
 * range) and the position kept. scale and shift apply to uint8 images
 * only; features and get give the floats as they are. */
int64_t dg_loader_next_host(dg_loader *l, float *x, int32_t *y);
/* The next batch as arena tensors on ctx's device: *x (B, sample_size...)
 * float, *y (B) DG_I32, with flatten choosing (B, sample_size) over
 * (B, 1, H, W). Returns B, or 0 at the end of the epoch, or -1 (with
 * *x, *y NULL, the message set and the position kept) if the tensors
 * could not be made.
 * On a GPU the batch is converted into pinned host memory and uploaded
 * asynchronously: the call returns before the copy is done, so the next
 * batch is prepared while the device computes. Two pinned buffers take
 * turns; before refilling one the loader waits for the upload that read
 * it (two batches back). If pinned memory cannot be had, pageable staging
 * is used (the copy is then staged before the call returns). */
int64_t dg_loader_next(dg_loader *l, dg_ctx *ctx, bool flatten, dg_tensor **x, dg_tensor **y);

#ifdef __cplusplus
}
#endif
#endif /* DGRAD_DATA_H */
