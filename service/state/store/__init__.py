"""The store: one interface (`base`), three backends, and the factory that picks one from
the settings (`factory`). Import what you need from the module that defines it."""
