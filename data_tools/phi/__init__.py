"""PHI: hint-pool refresh from a checkpoint's predictions and the multi-round driver."""
