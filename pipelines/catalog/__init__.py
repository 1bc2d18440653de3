"""The example pipelines and the connectors they use: registered only where named
(`GATEHOUSE_PIPELINES=pipelines.catalog`; the demo and the tests name it)."""
