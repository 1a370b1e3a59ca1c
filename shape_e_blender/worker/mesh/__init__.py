"""From a latent to mesh files: the implicit field, STF extraction, cleanup, export."""
