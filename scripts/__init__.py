"""Developer tools of text2art: training, evaluation, the Colab launcher and architecture checks."""
