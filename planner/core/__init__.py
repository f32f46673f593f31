"""What every workload family shares: units, errors, the schema base, devices and clusters,
collectives, and the strict reading and atomic writing of files."""
