"""Data stages: download MNIST and CelebA, pack them into HDF5, make the toy sets, and load any of them."""
