output "kuberay_namespace" {
  description = "Namespace of the KubeRay operator."
  value       = helm_release.kuberay_operator.namespace
}

output "prometheus_url" {
  description = "In-cluster URL of Prometheus (give it to the ray module for the Ray dashboard's charts); null when monitoring is off."
  value       = var.enable_monitoring ? "http://${local.kps_release}-prometheus.${var.monitoring_namespace}.svc:9090" : null
}

output "grafana_url" {
  description = "In-cluster URL of Grafana; null when monitoring is off."
  value       = var.enable_monitoring ? "http://${local.kps_release}-grafana.${var.monitoring_namespace}.svc:80" : null
}

output "grafana_port_forward_command" {
  description = "Reach Grafana from your machine on http://localhost:3000 (user admin; the password is in the Secret named by grafana_admin_secret)."
  value       = var.enable_monitoring ? "kubectl -n ${var.monitoring_namespace} port-forward svc/${local.kps_release}-grafana 3000:80" : null
}

output "grafana_admin_secret" {
  description = "namespace/name of the Secret holding Grafana's generated admin password (key admin-password)."
  value       = var.enable_monitoring ? "${var.monitoring_namespace}/${local.kps_release}-grafana" : null
}

output "storage_class" {
  description = "Default StorageClass (encrypted gp3 through the EBS CSI driver)."
  value       = kubernetes_storage_class_v1.gp3.metadata[0].name
}
