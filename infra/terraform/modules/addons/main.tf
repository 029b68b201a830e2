# Cluster add-ons redraft needs: the KubeRay operator, the NVIDIA device plugin (exposes nvidia.com/gpu),
# the cluster autoscaler (scales the GPU node groups from and to zero), an encrypted gp3 StorageClass,
# and kube-prometheus-stack (Prometheus Operator, Prometheus, Grafana with the dashboard sidecar).

locals {
  system_node_selector = { "redraft.dev/pool" = "system" }

  cluster_autoscaler_namespace = split("/", var.cluster_autoscaler_service_account)[0]
  cluster_autoscaler_sa        = split("/", var.cluster_autoscaler_service_account)[1]
  cluster_autoscaler_image_tag = coalesce(var.cluster_autoscaler_image_tag, "v${var.kubernetes_version}.0")

  kps_release = "kube-prometheus-stack"
}

resource "helm_release" "kuberay_operator" {
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm/"
  chart            = "kuberay-operator"
  version          = var.chart_versions.kuberay_operator
  namespace        = var.kuberay_namespace
  create_namespace = true
  atomic           = true

  values = [yamlencode({
    nodeSelector = local.system_node_selector
    resources = {
      requests = { cpu = "100m", memory = "256Mi" }
      limits   = { cpu = "1", memory = "512Mi" }
    }
  })]
}

resource "helm_release" "nvidia_device_plugin" {
  name       = "nvidia-device-plugin"
  repository = "https://nvidia.github.io/k8s-device-plugin"
  chart      = "nvidia-device-plugin"
  version    = var.chart_versions.nvidia_device_plugin
  namespace  = "kube-system"
  atomic     = true

  values = [yamlencode({
    # The chart's default affinity needs Node Feature Discovery labels; the GPU node groups carry
    # nvidia.com/gpu.present=true instead, so select on that.
    affinity     = null
    nodeSelector = { "nvidia.com/gpu.present" = "true" }
    tolerations  = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
  })]
}

resource "helm_release" "cluster_autoscaler" {
  name       = "cluster-autoscaler"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = var.chart_versions.cluster_autoscaler
  namespace  = local.cluster_autoscaler_namespace
  atomic     = true

  values = [yamlencode({
    cloudProvider = "aws"
    awsRegion     = var.region
    autoDiscovery = { clusterName = var.cluster_name }
    image         = { tag = local.cluster_autoscaler_image_tag }
    nodeSelector  = local.system_node_selector
    rbac = {
      serviceAccount = {
        create      = true
        name        = local.cluster_autoscaler_sa
        annotations = { "eks.amazonaws.com/role-arn" = var.cluster_autoscaler_role_arn }
      }
    }
    extraArgs = {
      "balance-similar-node-groups" = true
      "expander"                    = "least-waste"
      # Give GPU nodes back soon after a job's RayCluster is gone.
      "scale-down-unneeded-time"   = "10m"
      "scale-down-delay-after-add" = "5m"
    }
  })]
}

resource "kubernetes_storage_class_v1" "gp3" {
  metadata {
    name = "gp3-encrypted"
    annotations = {
      "storageclass.kubernetes.io/is-default-class" = "true"
    }
  }

  storage_provisioner    = "ebs.csi.aws.com"
  reclaim_policy         = "Delete"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true

  parameters = {
    type      = "gp3"
    encrypted = "true"
  }
}

resource "helm_release" "kube_prometheus_stack" {
  count = var.enable_monitoring ? 1 : 0

  name             = local.kps_release
  repository       = "https://prometheus-community.github.io/helm-charts"
  chart            = "kube-prometheus-stack"
  version          = var.chart_versions.kube_prometheus_stack
  namespace        = var.monitoring_namespace
  create_namespace = true
  timeout          = 900

  values = [yamlencode({
    alertmanager = { enabled = false }
    prometheus = {
      prometheusSpec = {
        # Pick up PodMonitors/ServiceMonitors from every namespace (the Ray PodMonitor lives in redraft's).
        podMonitorSelectorNilUsesHelmValues     = false
        serviceMonitorSelectorNilUsesHelmValues = false
        retention                               = var.prometheus_retention
        nodeSelector                            = local.system_node_selector
        storageSpec = {
          volumeClaimTemplate = {
            spec = {
              storageClassName = kubernetes_storage_class_v1.gp3.metadata[0].name
              accessModes      = ["ReadWriteOnce"]
              resources        = { requests = { storage = var.prometheus_storage_size } }
            }
          }
        }
      }
    }
    grafana = {
      nodeSelector = local.system_node_selector
      "grafana.ini" = {
        # The Ray dashboard embeds Grafana panels.
        security = { allow_embedding = true }
      }
      sidecar = {
        dashboards = {
          enabled         = true
          label           = var.grafana_dashboard_label.name
          labelValue      = var.grafana_dashboard_label.value
          searchNamespace = "ALL"
        }
      }
    }
    prometheusOperator   = { nodeSelector = local.system_node_selector }
    "kube-state-metrics" = { nodeSelector = local.system_node_selector }
  })]
}
