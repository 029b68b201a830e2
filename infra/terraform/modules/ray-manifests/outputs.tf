output "serve_ray_cluster" {
  description = "The Serve RayCluster object (apiVersion ray.io/v1), ready for kubernetes_manifest."
  value       = local.serve_ray_cluster
}

output "nightly_ray_job" {
  description = "The RayJob object (apiVersion ray.io/v1, metadata.generateName) that each scheduled run creates."
  value       = local.nightly_ray_job
}

output "nightly_ray_job_yaml" {
  description = "nightly_ray_job as YAML, the form the schedule's ConfigMap stores it in."
  value       = yamlencode(local.nightly_ray_job)
}

output "ray_pod_monitor" {
  description = "PodMonitor (monitoring.coreos.com/v1) scraping the metrics port of every Ray node in the namespace."
  value       = local.ray_pod_monitor
}

output "serve_head_selector" {
  description = "Pod labels that select the Serve cluster's head pod (for Services in front of the dashboard and Serve)."
  value = {
    "ray.io/cluster"   = var.serve.name
    "ray.io/node-type" = "head"
  }
}

output "ports" {
  description = "Ray ports by role: gcs, dashboard, client, serve, metrics."
  value       = { for k, p in local.ports : k => p.containerPort }
}
