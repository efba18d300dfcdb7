"""The ``asagi`` operator CLI. It drives a Dagster instance, so it lives outside the
library (asagi_dagster/), which GPU pods import with only dagster-pipes installed."""
