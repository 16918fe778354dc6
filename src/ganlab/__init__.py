"""ganlab: reproduce, train and compare the classic GAN curriculum (a DVC pipeline tracked in MLflow)."""
