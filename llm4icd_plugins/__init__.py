"""llm4icd plugins: ICD code systems, the answer parser, metrics and framework glue.

Importing this package is cheap: submodules that need torch, verl or LlamaFactory are only
imported by the frameworks that use them.
"""

__version__ = "0.1.0"
