"""Training on cached features: the fc head and its fine-tuning (:mod:`.head`, :mod:`.finetune`),
the per-class linear SVMs with hard-negative mining (:mod:`.svm`, on :mod:`.sparse_rows`), and
bounding-box regression (:mod:`.bbox`). :mod:`.stage` runs them as pipeline stages."""
