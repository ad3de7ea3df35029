"""Lightning callbacks: speed measurement and run metadata in checkpoints."""
