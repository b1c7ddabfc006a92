"""The ground floor: what every room shares (paths and the data catalogue, config loading, errors,
logging, the event contract, the event store, model specs). It imports nothing of the rooms above it."""
