# Pure configuration: no providers. It renders the Kubernetes objects that the `ray` module applies,
# so they can be rendered and inspected offline (see tests/test_terraform.py).
terraform {
  required_version = ">= 1.9"
}
