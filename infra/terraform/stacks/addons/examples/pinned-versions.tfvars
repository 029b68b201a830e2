# Normally the values come from `terraform -chdir=../aws output -json addons_stack_inputs`
# (written to aws.auto.tfvars.json). This file shows the remaining knobs.
chart_versions = {
  kuberay_operator      = "1.5.1"
  kube_prometheus_stack = "69.4.1"
  cluster_autoscaler    = "9.53.0"
  nvidia_device_plugin  = "0.17.1"
}

enable_monitoring       = true
prometheus_retention    = "30d"
prometheus_storage_size = "100Gi"
