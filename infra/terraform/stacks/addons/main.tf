# Cluster add-ons: KubeRay operator, NVIDIA device plugin, cluster autoscaler, gp3 StorageClass and
# Prometheus/Grafana. Apply after stacks/aws and before stacks/ray (which needs the CRDs installed here).

module "addons" {
  source = "../../modules/addons"

  cluster_name                = var.cluster_name
  region                      = var.region
  kubernetes_version          = var.kubernetes_version
  cluster_autoscaler_role_arn = var.cluster_autoscaler_role_arn
  chart_versions              = { for k, v in var.chart_versions : k => v if v != null }
  enable_monitoring           = var.enable_monitoring
  prometheus_retention        = var.prometheus_retention
  prometheus_storage_size     = var.prometheus_storage_size
}
