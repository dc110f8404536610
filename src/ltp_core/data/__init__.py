"""Building blocks of :mod:`ltp_core.datasets`: file readers, lookup, downloads and splits.

One module per job:

- :mod:`~ltp_core.data.idx`: IDX reader (MNIST / Fashion-MNIST files, gzip or plain).
- :mod:`~ltp_core.data.npz`: Keras' ``mnist.npz`` reader.
- :mod:`~ltp_core.data.cifar`: CIFAR-10 python batches (folder or ``.tar.gz``), restricted
  unpickling.
- :mod:`~ltp_core.data.locations`: search roots (data directory, Keras cache).
- :mod:`~ltp_core.data.sources`: per-dataset layouts, URLs and lookup.
- :mod:`~ltp_core.data.download`: atomic, checksummed downloads.
- :mod:`~ltp_core.data.split`: seeded stratified hold-out splits.

Use :func:`ltp_core.datasets.load_dataset` rather than these modules directly.
"""
